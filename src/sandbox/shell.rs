//! A Bash command line split the way Bash would split it, for safety rules that
//! ask "what would this write?". It is a reader, not an interpreter: quotes,
//! escapes (`\x`, `$'\x2e'`), operators (`;` `&&` `||` `|` `&` newlines, `( )`),
//! redirections (`>` `>>` `&>` `2>` `>|` `<>` ...) and nested commands (`$( )`,
//! backticks, `<( )`, `>( )`) are understood; variables, globs and command
//! substitutions are left as written (a `$`, `` ` ``, `*`, `?` or `[` in a word tells
//! the rules its value is only known at run time).
//!
//! The reader is linear in the length of the line, nests at most [`MAX_DEPTH`]
//! levels (no stack overflow however deep a model nests `$(`), and stops at a
//! deadline: a line it cannot read in time or nests deeper is [`TooComplex`], which
//! the safety rules deny.

use std::time::{Duration, Instant};

/// Deepest nesting of `$( )`, backticks and `<( )` the reader follows.
pub const MAX_DEPTH: usize = 64;
/// Most simple commands one line may hold (real lines hold a few dozen).
pub const MAX_COMMANDS: usize = 10_000;
/// Longest line the reader looks at (bytes).
pub const MAX_LEN: usize = 1 << 20;
/// Time a parse may take when the caller gives no deadline.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(200);

/// A line the reader refuses to read: too deep, too long or too slow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the command is too complex to check ({0}), so it is refused")]
pub struct TooComplex(pub String);

/// One simple command: `VAR=x name args... > target`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    /// Leading `NAME=value` words.
    pub assigns: Vec<String>,
    /// The command name and its arguments.
    pub argv: Vec<String>,
    pub redirects: Vec<Redirect>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    /// `>`, `>>`, `>|`, `&>`, `&>>`, `<>`, `<`, `<<`, `<<<`, `>&`, `<&`.
    pub op: String,
    /// The file (or fd for `>&`), as written after unquoting.
    pub target: String,
}

impl Redirect {
    /// Whether this redirection writes to a file.
    pub fn writes(&self) -> bool {
        match self.op.as_str() {
            ">" | ">>" | ">|" | "&>" | "&>>" | "<>" => true,
            // `>&file` (no fd number) also writes a file.
            ">&" => !self.target.chars().all(|c| c.is_ascii_digit() || c == '-'),
            _ => false,
        }
    }
}

/// Every simple command in `line`, nested ones (command substitutions) included,
/// in the order they end (a nested command comes before the one holding it).
pub fn parse(line: &str) -> Result<Vec<Command>, TooComplex> {
    parse_within(line, DEFAULT_BUDGET)
}

/// [`parse`] with its own time budget.
pub fn parse_within(line: &str, budget: Duration) -> Result<Vec<Command>, TooComplex> {
    if line.len() > MAX_LEN {
        return Err(TooComplex(format!(
            "{} bytes, more than {MAX_LEN}",
            line.len()
        )));
    }
    let chars: Vec<char> = line.chars().collect();
    let mut p = Parser {
        chars: &chars,
        pos: 0,
        out: Vec::new(),
        depth: 0,
        steps: 0,
        deadline: Instant::now() + budget,
        error: None,
    };
    p.commands(None);
    match p.error {
        Some(e) => Err(e),
        None => Ok(p.out),
    }
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
    out: Vec<Command>,
    depth: usize,
    steps: u32,
    deadline: Instant,
    /// Set when the line is too complex; the parse then stops.
    error: Option<TooComplex>,
}

impl Parser<'_> {
    /// Whether to stop: an error happened, or the deadline passed (checked every
    /// few thousand steps).
    fn stopped(&mut self) -> bool {
        if self.error.is_some() {
            return true;
        }
        self.steps += 1;
        if self.steps.is_multiple_of(4096) && Instant::now() > self.deadline {
            self.error = Some(TooComplex("reading it took too long".into()));
            self.pos = self.chars.len();
            return true;
        }
        false
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    /// Parse commands until `close` (for `$( )`) or the end.
    fn commands(&mut self, close: Option<char>) {
        let mut cmd = Command::default();
        let mut pending_redirect: Option<String> = None;
        while let Some(c) = self.peek(0) {
            if self.stopped() {
                return;
            }
            if Some(c) == close {
                self.pos += 1;
                break;
            }
            match c {
                ' ' | '\t' => self.pos += 1,
                '\\' if self.peek(1) == Some('\n') => self.pos += 2,
                '\n' | ';' | '&' | '|' | '(' | ')' => {
                    // `&>` and `&>>` are redirections, not separators.
                    if c == '&' && self.peek(1) == Some('>') {
                        self.pos += 1;
                        let op = if self.peek(1) == Some('>') {
                            self.pos += 2;
                            "&>>"
                        } else {
                            self.pos += 1;
                            "&>"
                        };
                        pending_redirect = Some(op.into());
                        continue;
                    }
                    self.pos += 1;
                    self.finish(&mut cmd);
                }
                '#' => {
                    while let Some(c) = self.peek(0) {
                        if c == '\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                '<' | '>' => {
                    if self.peek(1) == Some('(') {
                        // Process substitution: a nested command.
                        self.pos += 2;
                        self.nested(')');
                        continue;
                    }
                    pending_redirect = Some(self.redirect_op());
                }
                _ => {
                    let word = self.word();
                    if let Some(op) = pending_redirect.take() {
                        cmd.redirects.push(Redirect { op, target: word });
                    } else if let Some(op) = self.fd_redirect(&word) {
                        pending_redirect = Some(op);
                    } else if cmd.argv.is_empty() && is_assignment(&word) {
                        cmd.assigns.push(word);
                    } else if cmd.argv.is_empty()
                        && (word == "{" || word == "}" || is_keyword(&word))
                    {
                        // Grouping and compound-command keywords: the next word starts a command.
                    } else {
                        cmd.argv.push(word);
                    }
                }
            }
        }
        if let Some(op) = pending_redirect {
            cmd.redirects.push(Redirect {
                op,
                target: String::new(),
            });
        }
        self.finish(&mut cmd);
    }

    fn finish(&mut self, cmd: &mut Command) {
        if !cmd.argv.is_empty() || !cmd.assigns.is_empty() || !cmd.redirects.is_empty() {
            self.out.push(std::mem::take(cmd));
            if self.out.len() > MAX_COMMANDS && self.error.is_none() {
                self.error = Some(TooComplex(format!(
                    "more than {MAX_COMMANDS} commands in one line"
                )));
                self.pos = self.chars.len();
            }
        }
    }

    /// A word made only of digits followed by `<` or `>` is an fd: `2>`, `1>>`.
    fn fd_redirect(&mut self, word: &str) -> Option<String> {
        if !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
            if let Some('<' | '>') = self.peek(0) {
                // Only when the digits touch the operator (`2>x`, not `2 >x`).
                if self.pos > 0 && self.chars[self.pos - 1].is_ascii_digit() {
                    return Some(self.redirect_op());
                }
            }
        }
        None
    }

    fn redirect_op(&mut self) -> String {
        let mut op = String::new();
        while let Some(c) = self.peek(0) {
            let extend = matches!(
                (op.as_str(), c),
                ("", '<' | '>')
                    | (">", '>' | '|' | '&')
                    | ("<", '<' | '>' | '&')
                    | ("<<", '<' | '-')
            );
            if !extend {
                break;
            }
            op.push(c);
            self.pos += 1;
        }
        if op == "<<-" {
            op = "<<".into();
        }
        op
    }

    /// One word, unquoted; nested commands inside it are parsed into `out`.
    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek(0) {
            if self.stopped() {
                break;
            }
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => {
                    // `$(`, `<(`, `>(` handled below; a bare `(` ends the word.
                    break;
                }
                '\\' => {
                    match self.peek(1) {
                        Some('\n') => {}
                        Some(n) => w.push(n),
                        None => {}
                    }
                    self.pos += 2;
                }
                '\'' => {
                    self.pos += 1;
                    while let Some(c) = self.peek(0) {
                        self.pos += 1;
                        if c == '\'' {
                            break;
                        }
                        w.push(c);
                    }
                }
                '"' => {
                    self.pos += 1;
                    self.double_quoted(&mut w);
                }
                '$' if self.peek(1) == Some('\'') => {
                    self.pos += 2;
                    self.ansi_c(&mut w);
                }
                '$' | '`' if self.substitution(&mut w) => {}
                _ => {
                    w.push(c);
                    self.pos += 1;
                }
            }
        }
        w
    }

    /// `$( ... )` or `` `...` `` at the cursor: parse the nested command and leave
    /// a run-time marker in the word. False (nothing read) for anything else.
    fn substitution(&mut self, w: &mut String) -> bool {
        match (self.peek(0), self.peek(1)) {
            (Some('$'), Some('(')) => {
                self.pos += 2;
                self.nested(')');
            }
            (Some('`'), _) => {
                self.pos += 1;
                self.backticks();
            }
            _ => return false,
        }
        w.push_str("$(...)");
        true
    }

    fn double_quoted(&mut self, w: &mut String) {
        while let Some(c) = self.peek(0) {
            if self.stopped() {
                return;
            }
            match c {
                '"' => {
                    self.pos += 1;
                    return;
                }
                '\\' => {
                    match self.peek(1) {
                        Some(n @ ('"' | '\\' | '$' | '`')) => w.push(n),
                        Some('\n') => {}
                        Some(n) => {
                            w.push('\\');
                            w.push(n);
                        }
                        None => {}
                    }
                    self.pos += 2;
                }
                '$' | '`' if self.substitution(w) => {}
                _ => {
                    w.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `$'...'`: backslash escapes as Bash reads them.
    fn ansi_c(&mut self, w: &mut String) {
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            match c {
                '\'' => return,
                '\\' => {
                    let Some(n) = self.peek(0) else { return };
                    self.pos += 1;
                    match n {
                        'n' => w.push('\n'),
                        't' => w.push('\t'),
                        'x' => {
                            let hex: String = (0..2)
                                .filter_map(|i| self.peek(i))
                                .take_while(|c| c.is_ascii_hexdigit())
                                .collect();
                            self.pos += hex.len();
                            if let Some(ch) =
                                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                            {
                                w.push(ch);
                            }
                        }
                        '0'..='7' => {
                            let mut oct = String::from(n);
                            while oct.len() < 3
                                && self.peek(0).is_some_and(|c| ('0'..='7').contains(&c))
                            {
                                oct.push(self.peek(0).unwrap_or('0'));
                                self.pos += 1;
                            }
                            if let Some(ch) =
                                u32::from_str_radix(&oct, 8).ok().and_then(char::from_u32)
                            {
                                w.push(ch);
                            }
                        }
                        other => w.push(other),
                    }
                }
                _ => w.push(c),
            }
        }
    }

    /// A nested command list up to `close`; its commands join `out`. Too deep, its
    /// text (up to the matching `close`) becomes `eval TEXT`.
    fn nested(&mut self, close: char) {
        if !self.deeper() {
            return;
        }
        self.commands(Some(close));
        self.depth -= 1;
    }

    /// Go one level deeper, or stop the parse if that is too deep.
    fn deeper(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            self.error = Some(TooComplex(format!(
                "nested more than {MAX_DEPTH} levels deep"
            )));
            self.pos = self.chars.len();
            return false;
        }
        self.depth += 1;
        true
    }

    fn backticks(&mut self) {
        let mut text = Vec::new();
        while let Some(c) = self.peek(0) {
            if self.stopped() {
                return;
            }
            self.pos += 1;
            match c {
                '`' => break,
                '\\' => {
                    if let Some(n) = self.peek(0) {
                        text.push(n);
                        self.pos += 1;
                    }
                }
                _ => text.push(c),
            }
        }
        if !self.deeper() {
            return;
        }
        let mut inner = Parser {
            chars: &text,
            pos: 0,
            out: std::mem::take(&mut self.out),
            depth: self.depth,
            steps: self.steps,
            deadline: self.deadline,
            error: None,
        };
        inner.commands(None);
        self.out = inner.out;
        self.steps = inner.steps;
        if inner.error.is_some() {
            self.error = inner.error;
            self.pos = self.chars.len();
        }
        self.depth -= 1;
    }
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '+')
        }
        None => false,
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "if" | "then" | "else" | "elif" | "fi" | "do" | "done" | "while" | "until" | "!" | "time"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argvs(line: &str) -> Vec<Vec<String>> {
        parse(line).into_iter().map(|c| c.argv).collect()
    }

    fn parse(line: &str) -> Vec<Command> {
        super::parse(line).unwrap()
    }

    #[test]
    fn deep_nesting_is_too_complex_not_a_crash() {
        // 6,000 nested `$(` (issue 10, point 7): refused, no stack overflow.
        let line = format!("echo {}x{}", "$(".repeat(6000), ")".repeat(6000));
        let err = super::parse(&line).unwrap_err();
        assert!(err.to_string().contains("nested more than"), "{err}");
        let ticks = format!("echo {}", "`".repeat(5000));
        assert!(super::parse(&ticks).is_ok() || super::parse(&ticks).is_err());
        // Just under the limit reads fine.
        let ok = format!("{}rm .env{}", "$(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(argvs(&ok).contains(&vec!["rm".to_string(), ".env".to_string()]));
    }

    #[test]
    fn many_substitutions_read_in_linear_time() {
        // 40,000 sequential `$(true)` took 3.5 s (quadratic); now read (and refused
        // as too many commands) well inside the limit.
        let line = format!("echo {}", "$(true)".repeat(40_000));
        let started = std::time::Instant::now();
        let err = super::parse(&line).unwrap_err();
        assert!(err.to_string().contains("commands"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        let line = format!("echo {}", "$(true)".repeat(MAX_COMMANDS - 1));
        assert_eq!(parse(&line).len(), MAX_COMMANDS);
        let huge = "x".repeat(MAX_LEN + 1);
        assert!(super::parse(&huge).is_err());
    }

    #[test]
    fn a_line_past_its_deadline_is_too_complex() {
        let line = format!("echo {}", "ab ".repeat(100_000));
        let err = parse_within(&line, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn operators_split_commands() {
        assert_eq!(
            argvs("cd src && rm -f a.txt; ls | grep x || echo 'no luck' & wait"),
            vec![
                vec!["cd", "src"],
                vec!["rm", "-f", "a.txt"],
                vec!["ls"],
                vec!["grep", "x"],
                vec!["echo", "no luck"],
                vec!["wait"],
            ]
        );
    }

    #[test]
    fn quotes_and_escapes_are_removed() {
        assert_eq!(argvs(r#"rm .e"n"v"#), vec![vec!["rm", ".env"]]);
        assert_eq!(argvs(r"rm .e\nv"), vec![vec!["rm", ".env"]]);
        assert_eq!(argvs(r"rm $'\x2eenv'"), vec![vec!["rm", ".env"]]);
        assert_eq!(argvs(r"rm $'\056env'"), vec![vec!["rm", ".env"]]);
        assert_eq!(
            argvs(r#"echo "a \"b\" $HOME""#),
            vec![vec!["echo", "a \"b\" $HOME"]]
        );
    }

    #[test]
    fn redirections_are_found() {
        let c = &parse("echo hi>.env 2>>err.log &>all.txt >&2 < in.txt")[0];
        let ops: Vec<(&str, &str, bool)> = c
            .redirects
            .iter()
            .map(|r| (r.op.as_str(), r.target.as_str(), r.writes()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (">", ".env", true),
                (">>", "err.log", true),
                ("&>", "all.txt", true),
                (">&", "2", false),
                ("<", "in.txt", false)
            ]
        );
        assert_eq!(c.argv, vec!["echo", "hi"]);
        let c = &parse("cat <<EOF > out.txt")[0];
        assert_eq!(c.redirects[1].target, "out.txt");
    }

    #[test]
    fn nested_commands_are_parsed_too() {
        let all = argvs("echo $(rm .env) `touch .git/x` \"$(cat <(rm y))\"");
        assert!(
            all.contains(&vec!["rm".to_string(), ".env".to_string()]),
            "{all:?}"
        );
        assert!(
            all.contains(&vec!["touch".to_string(), ".git/x".to_string()]),
            "{all:?}"
        );
        assert!(
            all.contains(&vec!["rm".to_string(), "y".to_string()]),
            "{all:?}"
        );
    }

    #[test]
    fn assignments_and_groups() {
        let c = parse("F=.env X=1 env > $F; { rm a; }; if true; then rm b; fi");
        assert_eq!(c[0].assigns, vec!["F=.env", "X=1"]);
        assert_eq!(c[0].argv, vec!["env"]);
        assert_eq!(c[0].redirects[0].target, "$F");
        assert!(c.iter().any(|c| c.argv == vec!["rm", "a"]));
        assert!(c.iter().any(|c| c.argv == vec!["rm", "b"]));
    }
}
