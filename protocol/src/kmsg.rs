//! The markers the suite writes to `/dev/kmsg` around each case, so that a
//! kernel log read later (xtask's guest log) tells which case was running.

/// Every marker starts with this.
pub const MARKER: &str = "gmem-selftests:";

/// Which edge of a case a marker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Begin,
    End,
}

impl Edge {
    fn word(self) -> &'static str {
        match self {
            Edge::Begin => "begin",
            Edge::End => "end",
        }
    }
}

/// The marker line for `name` (without the newline).
pub fn marker(edge: Edge, name: &str) -> String {
    format!("{MARKER} {} {name}", edge.word())
}

/// The edge and case name of a marker message (kernel log prefixes already
/// stripped); `None` for any other message.
pub fn parse_marker(msg: &str) -> Option<(Edge, &str)> {
    let rest = msg.strip_prefix(MARKER)?.strip_prefix(' ')?;
    for edge in [Edge::Begin, Edge::End] {
        if let Some(name) = rest
            .strip_prefix(edge.word())
            .and_then(|r| r.strip_prefix(' '))
        {
            return Some((edge, name.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let m = marker(Edge::Begin, "bind.closed_fd_ebadf@default");
        assert_eq!(m, "gmem-selftests: begin bind.closed_fd_ebadf@default");
        assert_eq!(
            parse_marker(&m),
            Some((Edge::Begin, "bind.closed_fd_ebadf@default"))
        );
        assert_eq!(
            parse_marker("gmem-selftests: end a.b@default "),
            Some((Edge::End, "a.b@default"))
        );
    }

    #[test]
    fn other_lines_are_not_markers() {
        assert_eq!(parse_marker("gmem-selftests: WARNING: text"), None);
        assert_eq!(parse_marker("gmem-selftests: beginning"), None);
        assert_eq!(parse_marker("gmem-harness: tests done rc=0"), None);
        assert_eq!(parse_marker("kvm: begin x"), None);
    }
}
