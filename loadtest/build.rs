//! Generates the gRPC client for the Open Inference Protocol from the server's proto file.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; tonic-prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    println!("cargo:rerun-if-changed=../proto/inference.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["../proto/inference.proto"], &["../proto"])?;
    Ok(())
}
