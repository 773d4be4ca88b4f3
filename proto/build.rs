//! Generates the gRPC code from `taskcast/v1/*.proto` at build time, with the
//! vendored `protoc` so no system install is needed.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { env::set_var("PROTOC", protoc) };
    let well_known = protoc_bin_vendored::include_path()?.display().to_string();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protos = ["taskcast/v1/inference.proto", "taskcast/v1/trainer.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("taskcast_descriptor.bin"))
        .compile_protos(&protos, &[".", well_known.as_str()])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
