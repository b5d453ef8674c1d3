//! pki's integration tests, in one binary (link time and disk): each module was a test binary.

mod cli;
mod mtls;
