//! The gRPC front end with a tonic client over loopback (the Python tests use tritonclient).

mod common;

use common::{TestServer, breast_cancer_rows};
use switchyard::grpc::pb;
use switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn client(s: &TestServer) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    let addr = s.server.as_ref().unwrap().grpc_addr;
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn bc_request(rows: usize) -> pb::ModelInferRequest {
    let raw: Vec<u8> = breast_cancer_rows(rows)
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: "breast_cancer".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "X".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 30],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn infer_over_grpc_equals_rest() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let mut c = client(&s).await;
    let r = c.model_infer(bc_request(3)).await.unwrap().into_inner();
    assert_eq!(r.model_name, "breast_cancer");
    assert_eq!(r.model_version, "2");
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(r.outputs[1].shape, vec![3, 2]);
    let probs: Vec<f32> = r.raw_output_contents[1]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [3, 30], "datatype": "FP32",
                                               "data": breast_cancer_rows(3)}]});
    let (_, rest) = s.post_json("/v2/models/breast_cancer/infer", &body).await;
    let rest_probs: Vec<f32> = serde_json::from_value(rest["outputs"][1]["data"].clone()).unwrap();
    assert_eq!(probs, rest_probs);

    let text = s.text("/metrics").await;
    assert!(
        text.contains("switchyard_requests_total{model=\"breast_cancer\",version=\"2\",protocol=\"grpc\",outcome=\"success\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn errors_map_to_grpc_codes() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let mut c = client(&s).await;
    let mut unknown = bc_request(1);
    unknown.model_name = "nope".into();
    let e = c.model_infer(unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "unknown model 'nope'");
    let mut bad = bc_request(1);
    bad.inputs[0].shape = vec![1, 29];
    let e = c.model_infer(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("dimension 1 must be 30"),
        "{}",
        e.message()
    );
    let e = c
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "breast_cancer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("model control mode is 'none'"),
        "{}",
        e.message()
    );
    // Still serving.
    c.model_infer(bc_request(1)).await.unwrap();
}

#[tokio::test]
async fn messages_over_the_limit_are_refused() {
    let s = TestServer::start_configured(&["breast_cancer"], |a| a.max_request_size = 4096).await;
    let mut c = client(&s).await;
    let e = c.model_infer(bc_request(64)).await.unwrap_err();
    // tonic refuses oversized messages with OUT_OF_RANGE before they reach the service.
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message().contains("the limit is: 4096 bytes"),
        "{}",
        e.message()
    );
    c.model_infer(bc_request(1)).await.unwrap();
}

#[tokio::test]
async fn health_service_follows_readiness() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let addr = s.server.as_ref().unwrap().grpc_addr;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    // Shutdown turns it NOT_SERVING before the listener goes.
    let mut watch = h
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    s.server.as_ref().unwrap().shutdown();
    let next = watch.message().await;
    if let Ok(Some(m)) = next {
        assert_eq!(m.status(), ServingStatus::NotServing);
    }
}
