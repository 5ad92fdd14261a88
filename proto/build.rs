//! Generates the tonic client and server code and the descriptor set for reflection.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("control_descriptor.bin"))
        .compile_protos(&["streamgate/control/v1/control.proto"], &["."])?;
    println!("cargo:rerun-if-changed=streamgate/control/v1/control.proto");
    Ok(())
}
