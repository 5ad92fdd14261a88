//! Transcodes one file and prints the report as JSON.
//!
//! `cargo run -p streamgate-transcode --example transcode -- INPUT OUT_DIR`
//! `cargo run -p streamgate-transcode --example transcode -- --pattern SECONDS OUT_DIR`

use std::path::PathBuf;

use streamgate_transcode::{LadderConfig, make_test_pattern, transcode_with_progress};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = LadderConfig::default();
    let (input, out) = match args.as_slice() {
        [flag, secs, out] if flag == "--pattern" => {
            let out = PathBuf::from(out);
            let input = out.with_extension("source.mp4");
            make_test_pattern(&input, secs.parse()?, &cfg).await?;
            (input, out)
        }
        [input, out] => (PathBuf::from(input), PathBuf::from(out)),
        _ => {
            return Err(
                "usage: transcode INPUT OUT_DIR | transcode --pattern SECONDS OUT_DIR".into(),
            );
        }
    };
    let report = transcode_with_progress(&input, &out, &cfg, |p| {
        if let Some(f) = p.fraction() {
            eprint!("\r{:5.1} %", f * 100.0);
        }
    })
    .await?;
    eprintln!();
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
