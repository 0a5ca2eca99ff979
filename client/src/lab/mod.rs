//! The consistency lab (placeholder; being written).
