//! The disks a simulated node can run on.

use crate::{Configuration, CrashStorage, LogStorage, MemStorage, StorageError};
use std::fmt;

/// A disk the simulator can give a node: a [`LogStorage`] it can create
/// empty and crash.
pub trait SimStorage: LogStorage + fmt::Debug + Sized {
    /// An empty disk holding the boot `configuration`; `seed` drives any
    /// random choice the disk makes.
    fn create(configuration: Configuration, seed: u64) -> Self;

    /// The machine lost power: drop what the disk would lose.
    fn crash(&mut self) -> Result<(), StorageError>;

    /// How many unsynced writes crashes lost, and how many appends they
    /// tore (zero for a disk that loses nothing).
    fn losses(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// A disk that never loses a write.
impl SimStorage for MemStorage {
    fn create(configuration: Configuration, _seed: u64) -> Self {
        MemStorage::new(configuration)
    }

    fn crash(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A disk that loses unsynced writes and tears the last one (the default).
impl SimStorage for CrashStorage<MemStorage> {
    fn create(configuration: Configuration, seed: u64) -> Self {
        CrashStorage::new(MemStorage::new(configuration), seed)
    }

    fn crash(&mut self) -> Result<(), StorageError> {
        CrashStorage::crash(self)
    }

    fn losses(&self) -> (u64, u64) {
        let (_, lost, torn) = self.crash_stats();
        (lost, torn)
    }
}
