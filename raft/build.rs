//! Generates the gRPC code of the node-to-node protocol with a vendored protoc, so a build
//! needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build finds protoc through PROTOC; a build script is single-threaded.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_protos(&["proto/raft.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/raft.proto");
    Ok(())
}
