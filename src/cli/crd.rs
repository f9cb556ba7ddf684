use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Print the API reference (Markdown, every field and CEL rule) generated from the CRD
    /// schemas instead of the CRDs; `docs/reference/api.md` holds it.
    #[arg(long)]
    reference: bool,
}

pub fn run(args: CrdArgs) -> ExitCode {
    if args.reference {
        print!("{}", skybridge::api::reference_markdown());
        return ExitCode::SUCCESS;
    }
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
