//! Merkle trees for anti-entropy (placeholder; being written).
