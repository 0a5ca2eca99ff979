//! Delay distributions (placeholder; being written).
