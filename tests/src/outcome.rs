//! Reading kube-rs results in tests: the HTTP code a request got, or the `Status` it failed
//! with. Both panic on anything that is not an answer from the API server (a transport
//! error), which in a test is a failure in itself.

use std::fmt::Debug;

/// 200 for success, else the code of the API server's `Status`.
pub fn code_of<T: Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("expected an answer from the API server, got {other:?}"),
    }
}

/// The `Status` of a request that must have failed.
pub fn status_of<T: Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API Status error, got {other:?}"),
    }
}
