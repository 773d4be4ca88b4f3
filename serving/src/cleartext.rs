//! Whether a bearer token would travel in cleartext, checked once at
//! startup by whoever sends one.

/// Whether a token sent to `url` would cross the network in cleartext: an
/// `http://` URL whose host is not this machine. Worth a startup warning:
/// anyone on the path can read a bearer token and replay it.
pub fn cleartext_to_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_flagged_only_off_this_machine() {
        assert!(cleartext_to_remote("http://trainer:50052"));
        assert!(cleartext_to_remote("http://10.0.0.7:50052/"));
        assert!(!cleartext_to_remote("https://trainer:50052"));
        assert!(!cleartext_to_remote("http://127.0.0.1:50052"));
        assert!(!cleartext_to_remote("http://localhost:50052"));
        assert!(!cleartext_to_remote("http://[::1]:50052"));
    }
}
