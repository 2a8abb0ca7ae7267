//! The C side of mutant generation: a small lexer that tells code from
//! comments, string and character literals and preprocessor lines (also
//! across lines), a per-line tokenizer over what is left, and the
//! operators, each turning one line into the mutated versions of it.
//!
//! Everything here works on one line of the series tip at a time; an
//! operator that would need to change two lines does not apply.
//!
//! Rules (they are part of what a mutant id means, so keep them stable):
//! - negate-condition: `if (c)` / `while (c)` -> `if (!(c))` when the
//!   condition closes on the same line; `c ? a : b` -> `!(c) ? a : b` when
//!   `c` starts on the line after `return`, `=`, `,` or `(`.
//! - swap-relational: `<` <-> `<=`, `>` <-> `>=` (never `->`, `<<`, `>>`).
//! - swap-logical: `&&` <-> `||`.
//! - replace-errno: a `-E...` after `return`, `=` or `ERR_PTR(` becomes 0
//!   (nth 2k-1) and another errno (nth 2k): EINVAL -> EFAULT, any other ->
//!   EINVAL.
//! - drop-call: a whole-line call statement `f(...);` / `p->f(...);`
//!   becomes `;`. Not declarations (`XA_STATE(...)`, `DEFINE_...`), not
//!   assertions (`WARN*`, `BUG_ON`, `KVM_BUG_ON`, `lockdep_assert_*`,
//!   `BUILD_BUG_ON*`, `might_sleep`): in a correct kernel an assertion never
//!   fires, so dropping one is equivalent by construction.
//! - off-by-one: a range end moves by one, `x` -> `x - 1` then `x + 1`.
//!   A range end is an operand of a relational operator that names `end`,
//!   `npages`, `nr_pages`, `len` or `size` (or `*_end`, `*_npages`,
//!   `*_len`, `*_size`), or the value assigned to a variable or field of
//!   such a name. Operands with shifts or bit operators are parenthesised.
//! - drop-flag: in a mask `A | B | C` of upper-case names, each flag in
//!   turn is dropped.

use super::model::Operator;

/// What the lexer knows about one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo {
    /// The line with comments and the contents of string and character
    /// literals blanked out (byte offsets are kept); all blank on a
    /// preprocessor line.
    pub code: String,
    pub preprocessor: bool,
    /// Brace depth where the line starts.
    pub depth: u32,
    /// The function whose body holds the line's start, if any.
    pub function: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    BlockComment,
}

/// Lex a whole C file. Block comments carry across lines, as do
/// preprocessor lines continued with `\`.
pub fn scan(src: &str) -> Vec<LineInfo> {
    let mut out = Vec::new();
    let mut state = State::Code;
    let mut continued_pp = false;
    let mut depth: u32 = 0;
    let mut function: Option<String> = None;
    // Code at depth 0 since the last `;`, `}` or preprocessor line: the
    // header of the next function, when a `{` follows.
    let mut header = String::new();
    for line in src.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let starts_in_comment = state == State::BlockComment;
        let first = line.trim_start();
        let preprocessor = continued_pp || (!starts_in_comment && first.starts_with('#'));
        continued_pp = preprocessor && line.ends_with('\\');
        let mut code = String::with_capacity(line.len());
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match state {
                State::BlockComment => {
                    if c == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        code.push_str("  ");
                        i += 2;
                        state = State::Code;
                    } else {
                        code.push(' ');
                        i += 1;
                    }
                }
                State::Code => {
                    if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        code.push_str("  ");
                        i += 2;
                        state = State::BlockComment;
                    } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
                        code.extend(std::iter::repeat_n(' ', bytes.len() - i));
                        i = bytes.len();
                    } else if c == b'"' || c == b'\'' {
                        // A literal: keep the quotes, blank the contents.
                        code.push(c as char);
                        i += 1;
                        while i < bytes.len() && bytes[i] != c {
                            let n = if bytes[i] == b'\\' { 2 } else { 1 };
                            let n = n.min(bytes.len() - i);
                            code.extend(std::iter::repeat_n(' ', n));
                            i += n;
                        }
                        if i < bytes.len() {
                            code.push(c as char);
                            i += 1;
                        }
                    } else if c.is_ascii() {
                        code.push(c as char);
                        i += 1;
                    } else {
                        code.push(' ');
                        i += 1;
                    }
                }
            }
        }
        if preprocessor {
            code = " ".repeat(code.len());
        }
        let line_depth = depth;
        let line_function = if depth > 0 { function.clone() } else { None };
        if preprocessor {
            header.clear();
        }
        for ch in code.chars() {
            match ch {
                '{' => {
                    if depth == 0 {
                        function = function_name(&header);
                    }
                    depth += 1;
                }
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        function = None;
                        header.clear();
                    }
                }
                ';' if depth == 0 => header.clear(),
                _ if depth == 0 => header.push(ch),
                _ => {}
            }
        }
        if depth == 0 {
            header.push(' ');
        }
        out.push(LineInfo {
            code,
            preprocessor,
            depth: line_depth,
            function: line_function,
        });
    }
    // `split` yields an empty last piece after the final newline.
    if src.ends_with('\n') {
        out.pop();
    }
    out
}

/// The name in a function header (`static int foo(int a)` -> `foo`,
/// `static int FNAME(walk)(...)` -> `FNAME(walk)`); None for initializers,
/// structs and the like.
fn function_name(header: &str) -> Option<String> {
    let open = header.find('(')?;
    if header[..open].contains('=') {
        return None;
    }
    let before = header[..open].trim_end();
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |p| p + 1);
    let name = &before[start..];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || is_keyword(name) {
        return None;
    }
    // FNAME(x)(...): a name built by a macro.
    let rest = header[open + 1..].trim_start();
    let inner_end = rest.find(')')?;
    let inner = rest[..inner_end].trim();
    if rest[inner_end + 1..].trim_start().starts_with('(')
        && !inner.is_empty()
        && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Some(format!("{name}({inner})"));
    }
    Some(name.to_string())
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "if" | "else"
            | "while"
            | "for"
            | "do"
            | "switch"
            | "case"
            | "default"
            | "return"
            | "goto"
            | "break"
            | "continue"
            | "sizeof"
            | "struct"
            | "union"
            | "enum"
            | "typeof"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ident,
    Number,
    Punct,
}

/// A token of the blanked line: its kind and byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tok {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

const PUNCT3: [&str; 3] = ["<<=", ">>=", "..."];
const PUNCT2: [&str; 19] = [
    "->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "++", "--", "+=", "-=", "*=", "/=", "%=",
    "&=", "|=", "^=",
];

/// Tokenize blanked code (literal quotes come out as `"`/`'` puncts).
pub fn tokens(code: &str) -> Vec<Tok> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let kind = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Kind::Ident
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            Kind::Number
        } else {
            let rest = &code[i..];
            let n = if PUNCT3.iter().any(|p| rest.starts_with(p)) {
                3
            } else if PUNCT2.iter().any(|p| rest.starts_with(p)) {
                2
            } else {
                1
            };
            i += n;
            Kind::Punct
        };
        out.push(Tok {
            kind,
            start,
            end: i,
        });
    }
    out
}

/// One line with its tokens, as the operators see it.
pub struct Line<'a> {
    /// The original text.
    pub text: &'a str,
    /// The blanked text the tokens index.
    pub code: &'a str,
    pub toks: Vec<Tok>,
    /// The last token of the previous line with code, if any.
    pub prev_last: Option<String>,
}

impl<'a> Line<'a> {
    pub fn new(text: &'a str, code: &'a str, prev_last: Option<String>) -> Self {
        Line {
            text,
            code,
            toks: tokens(code),
            prev_last,
        }
    }

    fn t(&self, k: usize) -> &str {
        let t = self.toks[k];
        &self.code[t.start..t.end]
    }

    fn is(&self, k: usize, s: &str) -> bool {
        k < self.toks.len() && self.t(k) == s
    }

    /// Replace bytes `a..b` of the original line.
    fn splice(&self, a: usize, b: usize, with: &str) -> String {
        format!("{}{with}{}", &self.text[..a], &self.text[b..])
    }

    /// Index of the token closing the bracket opened at `k`.
    fn matching(&self, k: usize) -> Option<usize> {
        let (open, close) = match self.t(k) {
            "(" => ("(", ")"),
            "[" => ("[", "]"),
            _ => return None,
        };
        let mut depth = 0usize;
        for j in k..self.toks.len() {
            if self.t(j) == open {
                depth += 1;
            } else if self.t(j) == close {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
        }
        None
    }
}

/// Every mutated version of `line`, per operator, in a fixed order.
pub fn mutate_line(line: &Line) -> Vec<(Operator, String)> {
    let mut out = Vec::new();
    for op in Operator::ALL {
        let variants = match op {
            Operator::NegateCondition => negate_condition(line),
            Operator::SwapRelational => swap_relational(line),
            Operator::SwapLogical => swap_logical(line),
            Operator::ReplaceErrno => replace_errno(line),
            Operator::DropCall => drop_call(line).into_iter().collect(),
            Operator::OffByOne => off_by_one(line),
            Operator::DropFlag => drop_flag(line),
        };
        for v in variants {
            if v != line.text {
                out.push((op, v));
            }
        }
    }
    out
}

fn negate_condition(l: &Line) -> Vec<String> {
    let mut out = Vec::new();
    for k in 0..l.toks.len() {
        let t = l.t(k);
        if (t == "if" || t == "while") && l.is(k + 1, "(") {
            if let Some(close) = l.matching(k + 1) {
                let a = l.toks[k + 1].end;
                let b = l.toks[close].start;
                if close > k + 2 {
                    let cond = &l.text[a..b];
                    out.push(l.splice(a, b, &format!("!({cond})")));
                }
            }
        } else if t == "?" {
            if let Some(first) = condition_start(l, k) {
                let a = l.toks[first].start;
                let b = l.toks[k - 1].end;
                let cond = &l.text[a..b];
                out.push(l.splice(a, b, &format!("!({cond})")));
            }
        }
    }
    out
}

/// First token of the condition of the `?` at `q`, when it starts on this
/// line after `return`, `=`, `,` or an open `(`.
fn condition_start(l: &Line, q: usize) -> Option<usize> {
    let mut depth = 0i32;
    let mut j = q;
    while j > 0 {
        j -= 1;
        match l.t(j) {
            ")" | "]" => depth += 1,
            "(" | "[" if depth == 0 => return (j + 1 < q).then_some(j + 1),
            "(" | "[" => depth -= 1,
            "return" | "=" | "," | "+=" | "-=" | "|=" | "&=" if depth == 0 => {
                return (j + 1 < q).then_some(j + 1)
            }
            "?" | ":" | ";" | "{" | "}" if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

fn is_relational(s: &str) -> bool {
    matches!(s, "<" | "<=" | ">" | ">=")
}

fn swap_relational(l: &Line) -> Vec<String> {
    (0..l.toks.len())
        .filter_map(|k| {
            let with = match l.t(k) {
                "<" => "<=",
                "<=" => "<",
                ">" => ">=",
                ">=" => ">",
                _ => return None,
            };
            Some(l.splice(l.toks[k].start, l.toks[k].end, with))
        })
        .collect()
}

fn swap_logical(l: &Line) -> Vec<String> {
    (0..l.toks.len())
        .filter_map(|k| {
            let with = match l.t(k) {
                "&&" => "||",
                "||" => "&&",
                _ => return None,
            };
            Some(l.splice(l.toks[k].start, l.toks[k].end, with))
        })
        .collect()
}

fn is_errno(s: &str) -> bool {
    s.len() >= 3
        && s.starts_with('E')
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn replace_errno(l: &Line) -> Vec<String> {
    let mut out = Vec::new();
    for k in 1..l.toks.len().saturating_sub(1) {
        if l.t(k) != "-" || l.toks[k + 1].kind != Kind::Ident || !is_errno(l.t(k + 1)) {
            continue;
        }
        let before = l.t(k - 1);
        let returned = before == "return"
            || before == "="
            || (before == "(" && k >= 2 && l.t(k - 2) == "ERR_PTR");
        if !returned {
            continue;
        }
        let a = l.toks[k].start;
        let b = l.toks[k + 1].end;
        let other = if l.t(k + 1) == "EINVAL" {
            "-EFAULT"
        } else {
            "-EINVAL"
        };
        out.push(l.splice(a, b, "0"));
        out.push(l.splice(a, b, other));
    }
    out
}

/// Calls that are declarations or assertions: never dropped.
fn never_dropped(callee: &str) -> bool {
    callee.starts_with("DEFINE_")
        || callee.starts_with("DECLARE_")
        || callee.ends_with("_STATE")
        || callee == "LIST_HEAD"
        || callee.starts_with("WARN")
        || callee.starts_with("BUG_ON")
        || callee.starts_with("BUILD_BUG_ON")
        || callee.starts_with("KVM_BUG")
        || callee.starts_with("lockdep_assert")
        || callee == "might_sleep"
        || callee == "static_assert"
}

fn drop_call(l: &Line) -> Option<String> {
    let n = l.toks.len();
    if n < 4 || l.toks[0].kind != Kind::Ident || is_keyword(l.t(0)) {
        return None;
    }
    // A statement starts on this line only after one ended.
    if let Some(prev) = &l.prev_last {
        if !matches!(prev.as_str(), ";" | "{" | "}" | ")" | ":" | "else") {
            return None;
        }
    }
    let mut k = 0;
    while l.is(k + 1, "->") || l.is(k + 1, ".") {
        if k + 2 >= n || l.toks[k + 2].kind != Kind::Ident {
            return None;
        }
        k += 2;
    }
    if !l.is(k + 1, "(") || never_dropped(l.t(k)) {
        return None;
    }
    let close = l.matching(k + 1)?;
    if close + 2 != n || !l.is(close + 1, ";") {
        return None;
    }
    let indent = &l.text[..l.toks[0].start];
    Some(format!("{indent};"))
}

fn is_range_end(name: &str) -> bool {
    const NAMES: [&str; 5] = ["end", "npages", "nr_pages", "len", "size"];
    NAMES.contains(&name)
        || ["_end", "_npages", "_len", "_size"]
            .iter()
            .any(|s| name.ends_with(s) && name.len() > s.len())
}

/// Tokens that end an operand of a comparison.
fn ends_operand(s: &str) -> bool {
    matches!(
        s,
        "&&" | "||" | "?" | ":" | "," | ";" | "==" | "!=" | "=" | "return" | "!" | "{" | "}"
    ) || is_relational(s)
        || (s.len() == 2 && s.ends_with('=') && s != "==")
}

/// `x` moved by one, parenthesised when `+`/`-` would bind into it.
fn moved(text: &str, toks: &[&str], by: &str) -> String {
    let loose = toks
        .iter()
        .any(|t| matches!(*t, "<<" | ">>" | "&" | "|" | "^" | "?" | ":"));
    if loose {
        format!("({text}) {by}")
    } else {
        format!("{text} {by}")
    }
}

fn off_by_one(l: &Line) -> Vec<String> {
    let mut spans: Vec<(usize, usize, bool)> = Vec::new();
    let n = l.toks.len();
    for k in 0..n {
        let t = l.t(k);
        if is_relational(t) {
            // Left operand.
            let mut depth = 0i32;
            let mut j = k;
            let mut left = None;
            while j > 0 {
                j -= 1;
                let s = l.t(j);
                if s == ")" || s == "]" {
                    depth += 1;
                } else if (s == "(" || s == "[") && depth > 0 {
                    depth -= 1;
                } else if (s == "(" || s == "[") || (depth == 0 && ends_operand(s)) {
                    left = Some(j + 1);
                    break;
                }
            }
            if let Some(a) = left.filter(|&a| a < k) {
                spans.push((a, k - 1, false));
            }
            // Right operand.
            let mut depth = 0i32;
            let mut right = None;
            for j in k + 1..n {
                let s = l.t(j);
                if s == "(" || s == "[" {
                    depth += 1;
                } else if (s == ")" || s == "]") && depth > 0 {
                    depth -= 1;
                } else if (s == ")" || s == "]") || (depth == 0 && ends_operand(s)) {
                    right = Some(j);
                    break;
                }
            }
            if let Some(b) = right.filter(|&b| b > k + 1) {
                spans.push((k + 1, b - 1, false));
            }
        } else if t == "=" && k > 0 && l.toks[k - 1].kind == Kind::Ident && is_range_end(l.t(k - 1))
        {
            let mut depth = 0i32;
            for j in k + 1..n {
                let s = l.t(j);
                if s == "(" || s == "[" {
                    depth += 1;
                } else if s == ")" || s == "]" {
                    depth -= 1;
                    if depth < 0 {
                        break;
                    }
                } else if depth == 0 && (s == ";" || s == ",") {
                    if j > k + 1 {
                        spans.push((k + 1, j - 1, true));
                    }
                    break;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (a, b, assigned) in spans {
        let names: Vec<&str> = (a..=b).map(|j| l.t(j)).collect();
        let wanted =
            assigned || (a..=b).any(|j| l.toks[j].kind == Kind::Ident && is_range_end(l.t(j)));
        if !wanted {
            continue;
        }
        let (s, e) = (l.toks[a].start, l.toks[b].end);
        let text = &l.text[s..e];
        for by in ["- 1", "+ 1"] {
            out.push(l.splice(s, e, &moved(text, &names, by)));
        }
    }
    out
}

fn is_flag(s: &str) -> bool {
    s.len() >= 2
        && s.chars().any(|c| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn drop_flag(l: &Line) -> Vec<String> {
    let mut out = Vec::new();
    let n = l.toks.len();
    let mut k = 0;
    while k < n {
        // A chain FLAG | FLAG | ... not glued to other `|`s.
        let glued_before = k > 0 && l.is(k - 1, "|");
        if l.toks[k].kind != Kind::Ident || !is_flag(l.t(k)) || glued_before {
            k += 1;
            continue;
        }
        let mut chain = vec![k];
        let mut j = k;
        while l.is(j + 1, "|")
            && j + 2 < n
            && l.toks[j + 2].kind == Kind::Ident
            && is_flag(l.t(j + 2))
        {
            j += 2;
            chain.push(j);
        }
        let glued_after = l.is(j + 1, "|");
        if chain.len() >= 2 && !glued_after {
            for (i, &f) in chain.iter().enumerate() {
                let (a, b) = if i == 0 {
                    (l.toks[f].start, l.toks[chain[1]].start)
                } else {
                    (l.toks[chain[i - 1]].end, l.toks[f].end)
                };
                out.push(l.splice(a, b, ""));
            }
        }
        k = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutants of the last line of `src` (earlier lines give context).
    fn muts(src: &str) -> Vec<(Operator, String)> {
        let lines: Vec<&str> = src.lines().collect();
        let info = scan(src);
        let last = lines.len() - 1;
        let prev = info[..last].iter().rev().find_map(|i| {
            tokens(&i.code)
                .last()
                .map(|t| i.code[t.start..t.end].to_string())
        });
        mutate_line(&Line::new(lines[last], &info[last].code, prev))
    }

    fn of(src: &str, op: Operator) -> Vec<String> {
        muts(src)
            .into_iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, m)| m)
            .collect()
    }

    #[test]
    fn negate_condition_wraps_if_while_and_ternary_conditions() {
        assert_eq!(
            of("\tif (a && b)", Operator::NegateCondition),
            ["\tif (!(a && b))"]
        );
        assert_eq!(
            of("\twhile (i < n) {", Operator::NegateCondition),
            ["\twhile (!(i < n)) {"]
        );
        assert_eq!(
            of("\treturn r ? r : len;", Operator::NegateCondition),
            ["\treturn !(r) ? r : len;"]
        );
        assert_eq!(
            of("\tx = f(a, b) ? 1 : 2;", Operator::NegateCondition),
            ["\tx = !(f(a, b)) ? 1 : 2;"]
        );
        // The condition continues on the next line: not a one-line change.
        assert!(of("\tif (a &&", Operator::NegateCondition).is_empty());
    }

    #[test]
    fn relational_swaps_never_touch_arrows_or_shifts() {
        assert_eq!(
            of("\tif (p->a < b << 2)", Operator::SwapRelational),
            ["\tif (p->a <= b << 2)"]
        );
        assert_eq!(
            of("\tif (x >= y && y > z)", Operator::SwapRelational),
            ["\tif (x > y && y > z)", "\tif (x >= y && y >= z)"]
        );
        assert!(of("\tx = y >> 3;", Operator::SwapRelational).is_empty());
        assert!(of("#include <linux/kvm.h>", Operator::SwapRelational).is_empty());
    }

    #[test]
    fn logical_swaps() {
        assert_eq!(
            of("\treturn a && (b || c);", Operator::SwapLogical),
            ["\treturn a || (b || c);", "\treturn a && (b && c);"]
        );
    }

    #[test]
    fn errnos_become_zero_and_another_errno() {
        assert_eq!(
            of("\t\treturn -EINVAL;", Operator::ReplaceErrno),
            ["\t\treturn 0;", "\t\treturn -EFAULT;"]
        );
        assert_eq!(
            of("\tr = -ENOMEM;", Operator::ReplaceErrno),
            ["\tr = 0;", "\tr = -EINVAL;"]
        );
        assert_eq!(
            of("\treturn ERR_PTR(-EIO);", Operator::ReplaceErrno),
            ["\treturn ERR_PTR(0);", "\treturn ERR_PTR(-EINVAL);"]
        );
        // Compared, not returned.
        assert!(of("\tif (r == -EAGAIN)", Operator::ReplaceErrno).is_empty());
    }

    #[test]
    fn whole_line_calls_are_dropped_but_not_declarations_returns_or_asserts() {
        assert_eq!(
            of(
                "{\n\tfilemap_invalidate_lock(inode->i_mapping);",
                Operator::DropCall
            ),
            ["\t;"]
        );
        assert_eq!(
            of("{\n\t\trange->on_lock(kvm);", Operator::DropCall),
            ["\t\t;"]
        );
        for line in [
            "\treturn f(x);",
            "\tr = f(x);",
            "\tXA_STATE(xas, &kvm->mem_attr_array, start);",
            "\tlockdep_assert_held(&kvm->slots_lock);",
            "\tWARN_ON_ONCE(x);",
            "\tstruct kvm *kvm = f(x);",
            "\tfoo(a,",
            "\tif (x) f(y);",
        ] {
            assert!(
                of(&format!("{{\n{line}"), Operator::DropCall).is_empty(),
                "{line}"
            );
        }
        // The second line of a multi-line call is not a statement.
        assert!(of("\tr = foo(a,\n\t\tbar(b));", Operator::DropCall).is_empty());
        assert!(of("\tr = foo(a,\n\t\tbar(b);", Operator::DropCall).is_empty());
    }

    #[test]
    fn range_ends_move_by_one_in_comparisons_and_assignments() {
        assert_eq!(
            of(
                "\tfor (gfn = start; gfn < end; gfn++) {",
                Operator::OffByOne
            ),
            [
                "\tfor (gfn = start; gfn < end - 1; gfn++) {",
                "\tfor (gfn = start; gfn < end + 1; gfn++) {"
            ]
        );
        assert_eq!(
            of(
                "\tif (offset + len > i_size_read(inode))",
                Operator::OffByOne
            ),
            [
                "\tif (offset + len - 1 > i_size_read(inode))",
                "\tif (offset + len + 1 > i_size_read(inode))"
            ]
        );
        assert_eq!(
            of("\tend = (offset + len) >> PAGE_SHIFT;", Operator::OffByOne),
            [
                "\tend = ((offset + len) >> PAGE_SHIFT) - 1;",
                "\tend = ((offset + len) >> PAGE_SHIFT) + 1;"
            ]
        );
        // Neither side is a range end.
        assert!(of("\tif (i < n)", Operator::OffByOne).is_empty());
    }

    #[test]
    fn each_flag_of_a_mask_is_dropped_in_turn() {
        assert_eq!(
            of(
                "\tif (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE))",
                Operator::DropFlag
            ),
            [
                "\tif (mode & ~(FALLOC_FL_PUNCH_HOLE))",
                "\tif (mode & ~(FALLOC_FL_KEEP_SIZE))"
            ]
        );
        assert_eq!(
            of(
                "\t\t\tFGP_LOCK | FGP_ACCESSED | FGP_CREAT,",
                Operator::DropFlag
            )
            .len(),
            3
        );
        assert!(of("\tx = a | B;", Operator::DropFlag).is_empty());
    }

    #[test]
    fn comments_strings_and_preprocessor_lines_are_never_mutated() {
        for src in [
            "\t/* if (a < b) return -EINVAL; */",
            "\t// if (a && b) f(x);",
            "/*\n * if (a < b)\n\t  return -EINVAL;",
            "/* start\n   foo(x); */",
            "#define X(a) ((a) < 0 ? -EINVAL : 0)",
            "#define Y(a) \\\n\tif (a && b) f(a);",
            "\tpr_info(\"a < b && c || -EINVAL\");",
        ] {
            let all = muts(src);
            let real: Vec<_> = all
                .iter()
                .filter(|(o, _)| *o != Operator::DropCall)
                .collect();
            assert!(real.is_empty(), "{src:?}: {all:?}");
        }
        // Code after a comment closes is code again.
        assert_eq!(
            of("/* a\n b */ if (x < y)", Operator::SwapRelational),
            ["/* a\n b */ if (x <= y)".lines().last().unwrap()]
        );
        // A literal's content is left alone, the code around it is not.
        assert_eq!(
            of("\tif (c == '<' && d)", Operator::SwapLogical),
            ["\tif (c == '<' || d)"]
        );
        assert!(of("\tif (c == '<')", Operator::SwapRelational).is_empty());
    }

    #[test]
    fn scan_finds_the_enclosing_function() {
        let src = "static int foo(int a)\n{\n\treturn a;\n}\n\nstatic const struct x y = {\n\t.a = 1,\n};\nstatic int FNAME(walk)(int b)\n{\n\tif (b)\n\t\treturn 1;\n}\n";
        let info = scan(src);
        let f: Vec<Option<&str>> = info.iter().map(|i| i.function.as_deref()).collect();
        assert_eq!(f[2], Some("foo"));
        assert_eq!(f[6], None);
        assert_eq!(f[10], Some("FNAME(walk)"));
        assert_eq!(f[11], Some("FNAME(walk)"));
        assert_eq!(info[0].function, None);
    }
}
