//! Running models. A [`Backend`] is one instance of a loaded model that can execute one call at a
//! time; the scheduler owns a pool of them, each on its own thread. ONNX Runtime (`onnx`) is the
//! one implementation today.

pub mod library;
pub mod onnx;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::core::tensor::Tensor;
use crate::error::Result;

pub trait Backend: Send + 'static {
    /// Runs the model once. `inputs` are in signature order; the outputs come back in signature
    /// order, each with its full shape.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
}

/// How many of a loaded model's sessions are still alive. Each session holds a
/// [`SessionToken`] and gives it back when it is dropped, so an unload can show (and tests can
/// check) that the sessions, not only the handles to them, are gone.
#[derive(Debug, Clone, Default)]
pub struct LiveSessions(Arc<AtomicUsize>);

impl LiveSessions {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more live session until the token is dropped.
    pub fn token(&self) -> SessionToken {
        self.0.fetch_add(1, Ordering::AcqRel);
        SessionToken(self.0.clone())
    }
}

/// Held by a session (as its last field, so it drops after the session itself).
#[derive(Debug)]
pub struct SessionToken(Arc<AtomicUsize>);

impl Drop for SessionToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_count_live_sessions() {
        let live = LiveSessions::default();
        let a = live.token();
        let b = live.clone().token();
        assert_eq!(live.count(), 2);
        drop(a);
        assert_eq!(live.count(), 1);
        drop(b);
        assert_eq!(live.count(), 0);
    }
}
