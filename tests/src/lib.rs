//! End-to-end tests for dynakv live in `tests/e2e/` (one test binary: a harness that
//! runs real `dynakv-node` processes, and the scenarios). This package also builds the
//! node and the CLI under test-only names (`src/bin/`), which the scenarios start.
