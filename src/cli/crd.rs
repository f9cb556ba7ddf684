use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CrdArgs {}

pub fn run(_args: CrdArgs) -> ExitCode {
    match skybridge::api::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot render CRDs: {err}");
            ExitCode::FAILURE
        }
    }
}
