//! Running models. A [`Backend`] is one instance of a loaded model that can execute one call at a
//! time; the scheduler owns a pool of them, each on its own thread. ONNX Runtime (`onnx`) is the
//! one implementation today.

pub mod library;
pub mod onnx;

use crate::core::tensor::Tensor;
use crate::error::Result;

pub trait Backend: Send + 'static {
    /// Runs the model once. `inputs` are in signature order; the outputs come back in signature
    /// order, each with its full shape.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
}
