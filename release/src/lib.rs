//! konnector's release tooling. `oci` writes the images of the static binaries as OCI image layouts, byte for byte
//! the same for the same inputs, with no container daemon and no base image to pull: the binaries need no libc, so
//! the image is the binary plus the few files a non-root process expects.

pub mod oci;
pub mod tar;
