//! `konnector`: see [`konnector_cli`].

fn main() -> std::process::ExitCode {
    konnector_cli::main()
}
