//! The residency rule for artifacts: sensitive models never land in a public cloud's store.
//! Pure and synchronous so the operator can evaluate it while reconciling, before any I/O.

use crate::api::common::{Cloud, DataClass};

/// A copy the residency rule forbids. The operator turns this into a `Forbidden` condition and
/// an Event; the CLI exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "residency: a model of data class {data_class} must not be copied to a store in a {cloud} cloud"
)]
pub struct ResidencyError {
    pub data_class: DataClass,
    pub cloud: Cloud,
}

/// May a model of `data_class` be stored in an artifact store located in `destination`?
/// Delegates to [`DataClass::may_reside_in`] so the rule lives in exactly one place.
pub fn check(data_class: DataClass, destination: Cloud) -> Result<(), ResidencyError> {
    if data_class.may_reside_in(destination) {
        Ok(())
    } else {
        Err(ResidencyError {
            data_class,
            cloud: destination,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sensitive_to_public_is_refused() {
        for class in DataClass::ALL {
            assert!(check(class, Cloud::Private).is_ok());
        }
        assert!(check(DataClass::Public, Cloud::Public).is_ok());
        assert!(check(DataClass::Internal, Cloud::Public).is_ok());
        let err = check(DataClass::Sensitive, Cloud::Public).unwrap_err();
        assert_eq!(
            err,
            ResidencyError {
                data_class: DataClass::Sensitive,
                cloud: Cloud::Public
            }
        );
        assert!(err.to_string().contains("sensitive"));
    }
}
