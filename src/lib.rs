//! Switchyard: a model-serving gateway for ONNX models speaking the Open Inference Protocol.
//!
//! Where things live:
//! - `http` (and `grpc`): protocol front ends, thin adapters over [`service`];
//! - `auth`, `tls`, `listener`: who may call what, TLS, accepting connections (both front ends);
//! - `core`: protocol-agnostic tensors, requests, signatures and validation;
//! - `codec`: the V2 JSON wire format and Triton's binary tensor extension (REST and warm-up files);
//! - `batching`: the per-version queue and the workers that take batches from it;
//! - `runtime`: ONNX Runtime (library loading, sessions) behind a small `Backend` trait;
//! - `registry`: where models come from (folder backend, `config.toml`);
//! - `models`: the live model table and loading;
//! - `routing`: which version answers; rollouts (split, analysis, decisions);
//! - `monitoring`: Prometheus metrics.

pub mod admin;
pub mod auth;
pub mod batching;
pub mod cli;
pub mod codec;
pub mod core;
pub mod error;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod logging;
pub mod models;
pub mod monitoring;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod tls;
