//! `kubectl-konnector`: the same program as `konnector`, under the name kubectl looks for on PATH to run
//! `kubectl konnector …`.

fn main() -> std::process::ExitCode {
    konnector_cli::main()
}
