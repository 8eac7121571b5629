//! Locks that a panic elsewhere does not leave unusable.
//!
//! A `std::sync::Mutex` whose holder panicked is poisoned: each later `lock` returns an error.
//! Every mutex of this project guards state that each critical section leaves whole (one insert
//! or removal, a counter, a swap), so a panic in another task while it held the lock leaves
//! nothing half made, and the lock is taken as it is. One spelling of that everywhere:
//! [`Locked::locked`].
//!
//! ```
//! use std::sync::Mutex;
//! use weld_pipeline::sync::Locked;
//!
//! let counter = Mutex::new(0);
//! *counter.locked() += 1;
//! assert_eq!(*counter.locked(), 1);
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locking that takes a poisoned lock as it is (see the module docs).
pub trait Locked<T: ?Sized> {
    /// Locks it, whether or not a panic poisoned it; blocks until it is free.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_as_it_is() {
        let shared = Arc::new(Mutex::new(vec![1]));
        let poisoner = shared.clone();
        let panicked = std::thread::spawn(move || {
            let _held = poisoner.lock().unwrap();
            panic!("while holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(shared.is_poisoned());
        shared.locked().push(2);
        assert_eq!(*shared.locked(), [1, 2]);
    }
}
