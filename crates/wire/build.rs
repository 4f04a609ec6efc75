//! Compiles the TF Serving-compatible and Open Inference Protocol protos in /proto with protox (pure Rust; no protoc), and
//! writes their descriptors for gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "tensorflow_serving/apis/prediction_service.proto",
        "tensorflow_serving/apis/model_service.proto",
        "tensorflow_serving/apis/prediction_log.proto",
        "tensorflow/core/protobuf/saved_model.proto",
        "grpc/health/v1/health.proto",
        "inference/grpc_predict_v2.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    // The descriptors themselves, for gRPC server reflection (what grpcurl asks for).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("file_descriptor_set.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Packed tensors are taken from the received buffer without a copy.
        .bytes(".tensorflow.TensorProto.tensor_content")
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        // Buffers sized to the message before encoding (src/codec.rs).
        .codec_path("crate::codec::ProstCodec")
        .compile_fds(fds)?;
    Ok(())
}
