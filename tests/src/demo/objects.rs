//! Names of the demo's NewResources in messages (creating and waiting is `testkit::newresources`).

/// `nr-11..nr-15`, for messages.
pub fn range_label(names: &[String]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [first, .., last] => format!("{first}..{last}"),
    }
}
