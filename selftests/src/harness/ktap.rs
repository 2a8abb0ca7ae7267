//! KTAP v1 writer (Documentation/dev-tools/ktap.rst) with the extra
//! diagnostics our protocol adds (`# time`, `# totals`).

use std::io::{self, Write};

use protocol::ktap;

/// Final verdict of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip(String),
}

/// Running counters, printed as `# totals: pass P fail F skip S`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
}

pub struct KtapWriter<W: Write> {
    out: W,
    next: usize,
    totals: Totals,
}

/// KTAP names and SKIP reasons live on one line and must not contain `#`
/// (it starts a directive): replace it and any control character.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c == '#' || c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

impl<W: Write> KtapWriter<W> {
    pub fn new(out: W) -> Self {
        KtapWriter {
            out,
            next: 1,
            totals: Totals::default(),
        }
    }

    /// `KTAP version 1` and the plan `1..N`.
    pub fn header(&mut self, planned: usize) -> io::Result<()> {
        writeln!(self.out, "{}", ktap::VERSION_LINE)?;
        writeln!(self.out, "1..{planned}")?;
        self.out.flush()
    }

    /// One `# ` line per line of `text` (empty lines are kept as `#`).
    pub fn diag(&mut self, text: &str) -> io::Result<()> {
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                writeln!(self.out, "#")?;
            } else {
                writeln!(self.out, "# {line}")?;
            }
        }
        self.out.flush()
    }

    /// The result line of the next case, then `# time <name> <ms>`.
    pub fn result(&mut self, name: &str, verdict: &Verdict, millis: u128) -> io::Result<usize> {
        let n = self.next;
        self.next += 1;
        let name = sanitize(name);
        match verdict {
            Verdict::Pass => {
                self.totals.pass += 1;
                writeln!(self.out, "ok {n} {name}")?;
            }
            Verdict::Fail => {
                self.totals.fail += 1;
                writeln!(self.out, "not ok {n} {name}")?;
            }
            Verdict::Skip(reason) => {
                self.totals.skip += 1;
                let reason = sanitize(reason);
                writeln!(self.out, "ok {n} {name} # SKIP {reason}")?;
            }
        }
        writeln!(self.out, "# {}{name} {millis}", ktap::TIME)?;
        self.out.flush()?;
        Ok(n)
    }

    /// `# totals: pass P fail F skip S`.
    /// `Bail out! reason`: the stream ends here, the rest of the plan
    /// without results.
    pub fn bail_out(&mut self, reason: &str) -> io::Result<()> {
        writeln!(self.out, "Bail out! {}", sanitize(reason))?;
        self.out.flush()
    }

    pub fn finish(&mut self) -> io::Result<Totals> {
        let t = self.totals;
        writeln!(
            self.out,
            "# {} pass {} fail {} skip {}",
            ktap::TOTALS,
            t.pass,
            t.fail,
            t.skip
        )?;
        self.out.flush()?;
        Ok(t)
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(w: KtapWriter<Vec<u8>>) -> String {
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn full_run_matches_protocol() {
        let mut w = KtapWriter::new(Vec::new());
        w.header(3).unwrap();
        w.diag("kernel 6.18").unwrap();
        w.result("create.size_zero@default", &Verdict::Pass, 3)
            .unwrap();
        w.diag("expected EINVAL, got 0\nsecond line").unwrap();
        w.result("bind.gpa_overlap@default", &Verdict::Fail, 12)
            .unwrap();
        w.result(
            "vcpu.private@sw_protected",
            &Verdict::Skip("KVM_X86_SW_PROTECTED_VM not in KVM_CAP_VM_TYPES".into()),
            0,
        )
        .unwrap();
        let t = w.finish().unwrap();
        assert_eq!(
            t,
            Totals {
                pass: 1,
                fail: 1,
                skip: 1
            }
        );
        let out = text(w);
        let expected = "KTAP version 1\n1..3\n# kernel 6.18\n\
ok 1 create.size_zero@default\n# time create.size_zero@default 3\n\
# expected EINVAL, got 0\n# second line\n\
not ok 2 bind.gpa_overlap@default\n# time bind.gpa_overlap@default 12\n\
ok 3 vcpu.private@sw_protected # SKIP KVM_X86_SW_PROTECTED_VM not in KVM_CAP_VM_TYPES\n\
# time vcpu.private@sw_protected 0\n\
# totals: pass 1 fail 1 skip 1\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn hash_and_newlines_cannot_break_a_result_line() {
        let mut w = KtapWriter::new(Vec::new());
        w.result("a#b", &Verdict::Skip("needs # of\nthings".into()), 1)
            .unwrap();
        let out = text(w);
        let first = out.lines().next().unwrap();
        assert_eq!(first, "ok 1 a b # SKIP needs   of things");
    }

    #[test]
    fn empty_diag_lines_stay_diagnostics() {
        let mut w = KtapWriter::new(Vec::new());
        w.diag("a\n\nb").unwrap();
        assert_eq!(text(w), "# a\n#\n# b\n");
    }
}
