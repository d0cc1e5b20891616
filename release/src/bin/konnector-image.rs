//! `konnector-image`: writes the OCI image layout of one konnector binary (see konnector_release::oci), prints the
//! digest of its image index. hack/build-images.sh runs it for both binaries.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use konnector_release::oci::{ImageSpec, Platform, write_layout};

/// Write a reproducible OCI image layout of a static binary, one image per platform, without a container daemon.
///
/// Example:
///   konnector-image --out target/images/konnector-gateway --tag 0.1.0 --image-version 0.1.0 --revision "$(git rev-parse HEAD)" \
///     --binary linux/amd64=target/static/x86_64-unknown-linux-gnu/release/konnector-gateway --expose 9443/tcp
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The layout directory to write (must not exist, or be empty).
    #[arg(long, env = "KONNECTOR_IMAGE_OUT")]
    out: PathBuf,
    /// The tag `oci:OUT:TAG` names.
    #[arg(long, env = "KONNECTOR_IMAGE_TAG")]
    tag: String,
    /// PLATFORM=PATH, e.g. linux/arm64=target/static/aarch64-unknown-linux-gnu/release/konnector-executor; repeat per
    /// platform. Every path must have the same file name, which becomes the entrypoint.
    #[arg(long = "binary", required = true, value_parser = parse_binary)]
    binaries: Vec<(Platform, PathBuf)>,
    /// The git commit the binaries were built from (label org.opencontainers.image.revision).
    #[arg(long, env = "KONNECTOR_GIT_REVISION")]
    revision: String,
    /// The release version (label org.opencontainers.image.version).
    #[arg(long, env = "KONNECTOR_IMAGE_VERSION")]
    image_version: String,
    /// The source repository (label org.opencontainers.image.source).
    #[arg(
        long,
        env = "KONNECTOR_IMAGE_SOURCE",
        default_value = "https://github.com/konnector/konnector"
    )]
    source: String,
    /// Port to declare, e.g. 9443/tcp; repeatable.
    #[arg(long = "expose")]
    exposed_ports: Vec<String>,
    /// A PEM bundle of trust anchors to carry at /etc/ssl/certs/ca-certificates.crt (it is an input of the digest).
    #[arg(long, env = "KONNECTOR_IMAGE_CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    /// Seconds since the epoch for every timestamp in the image.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u64,
}

fn parse_binary(s: &str) -> Result<(Platform, PathBuf)> {
    let (platform, path) = s.split_once('=').context("expected PLATFORM=PATH")?;
    Ok((platform.parse()?, PathBuf::from(path)))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut names = args
        .binaries
        .iter()
        .filter_map(|(_, p)| p.file_name())
        .collect::<Vec<_>>();
    names.dedup();
    ensure!(
        names.len() == 1,
        "every --binary must name the same program (got {names:?})"
    );
    let name = names[0].to_str().context("binary name is not UTF-8")?.to_owned();
    let mut binaries = BTreeMap::new();
    for (platform, path) in args.binaries {
        ensure!(
            binaries.insert(platform.clone(), path).is_none(),
            "platform {platform} given twice"
        );
    }
    let ca_bundle = args
        .ca_bundle
        .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let labels = BTreeMap::from([
        ("org.opencontainers.image.revision".to_owned(), args.revision),
        ("org.opencontainers.image.version".to_owned(), args.image_version),
        ("org.opencontainers.image.source".to_owned(), args.source),
        (
            "org.opencontainers.image.licenses".to_owned(),
            "Apache-2.0".to_owned(),
        ),
    ]);
    let spec = ImageSpec {
        name,
        tag: args.tag,
        binaries,
        labels,
        exposed_ports: args.exposed_ports,
        ca_bundle,
        epoch: args.source_date_epoch,
    };
    let index = write_layout(&args.out, &spec)?;
    println!("{}", index.digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        <super::Args as clap::CommandFactory>::command().debug_assert();
    }
}
