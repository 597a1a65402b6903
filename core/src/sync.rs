//! Locking that keeps serving after a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A poisoned lock means a panic on another thread while it was held; every
/// structure behind our locks is left consistent between statements, so keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
