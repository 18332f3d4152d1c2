//! Errors starting the gateway (request failures are [`Problem`](crate::problem::Problem)s).

/// The gateway could not be built or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration cannot be served with.
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// A coordinator address is not a valid URI.
    #[error("invalid coordinator address {address:?}: {source}")]
    CoordinatorAddress {
        /// The address as configured.
        address: String,
        /// Why it was refused.
        #[source]
        source: tonic::transport::Error,
    },
    /// Serving failed.
    #[error("gateway I/O error: {0}")]
    Io(#[from] std::io::Error),
}
