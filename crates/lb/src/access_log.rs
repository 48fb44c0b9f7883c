//! Access-log lines: a format string with `{name}` placeholders, filled in one
//! pass. Unknown placeholders are left as written. Lines go to the tracing
//! target `rampart_lb::access` at INFO, one per request (HTTP) or session (TCP).

/// Fills `fmt`'s `{name}` placeholders from `fields`.
pub fn render(fmt: &str, fields: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(fmt.len() + 64);
    let mut rest = fmt;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match fields.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Writes one access-log line.
pub fn emit(fmt: &str, fields: &[(&str, &str)]) {
    tracing::info!(target: "rampart_lb::access", "{}", render(fmt, fields));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_known_and_keeps_unknown() {
        let f = [("client", "127.0.0.1:5"), ("status", "200")];
        assert_eq!(render("{client} -> {status} {nope} {", &f), "127.0.0.1:5 -> 200 {nope} {");
        assert_eq!(render("", &f), "");
        assert_eq!(render("{status}{status}", &f), "200200");
        // A value containing a placeholder is not expanded again.
        assert_eq!(render("{client}", &[("client", "{status}"), ("status", "x")]), "{status}");
    }
}
