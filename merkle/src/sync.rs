//! Sync (in progress).
