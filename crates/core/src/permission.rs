//! Permissions: what a credential is granted, and what a route requires of it.
//!
//! A credential holds permissions (`videos.create`, `images.*`) of its own and through its roles
//! (named sets of permissions). [`Grants`] is their union, built once when the credential is
//! loaded into the cache and asked on every request. A route (a gateway route, an nginx location
//! through the `x-keygate-require` header, a tower Layer) requires a [`Requirement`], an
//! expression such as `videos.create AND (images.read OR admin)`. A request whose credential does
//! not meet it is refused with business code 1009 (HTTP 403).
//!
//! # Grammar
//!
//! ```text
//! expr  = or ;
//! or    = and , { "OR" , and } ;
//! and   = atom , { "AND" , atom } ;
//! atom  = name | "(" , expr , ")" ;
//! name  = char , { char } ;
//! char  = "A".."Z" | "a".."z" | "0".."9" | "_" | "." | ":" | "-" ;
//! grant = name | name , ".*" | "*" ;
//! ```
//!
//! - `AND` binds tighter than `OR`: `a OR b AND c` is `a OR (b AND c)`. The keywords are
//!   case-insensitive (`and`, `Or`) and stand between whitespace or parentheses: `a AND(b OR c)`
//!   is fine, `aANDb` is one name. Whitespace (space, tab, CR, LF, FF) is free between tokens.
//! - A name is 1 to [`MAX_PERMISSION_LEN`] characters, does not start or end with `.`, has no
//!   `..`, and is not a keyword (`and`, `or` in any case).
//! - A grant is a name, `*` (everything), or a name followed by `.*` (`images.*`: every name that
//!   starts with `images.`, at any depth, but not `images` itself), at most
//!   [`MAX_PERMISSION_LEN`] characters in all. A requirement never contains `*`.
//! - A requirement is at most [`MAX_REQUIREMENT_LEN`] bytes (as written and in its canonical
//!   form), names at most [`MAX_REQUIREMENT_NAMES`] permissions and nests parentheses at most
//!   [`MAX_REQUIREMENT_DEPTH`] deep. Anything else is an error whose message says what is wrong
//!   and where (a byte offset).
//!
//! A requirement's canonical form (its `Display`, and how it is serialized) has single spaces,
//! upper-case `AND` and `OR`, and parentheses only where they are needed: `(a or (b))and c`
//! is `(a OR b) AND c`. Parsing the canonical form gives the same requirement back.

use std::fmt;

/// The most characters in one permission name (or grant).
pub const MAX_PERMISSION_LEN: usize = 100;
/// The most permissions granted to one credential or role (checked on each list by whoever
/// stores it; a [`Grants`] is a union of several such lists and may hold more).
pub const MAX_PERMISSIONS: usize = 1000;
/// The most bytes in one requirement expression.
pub const MAX_REQUIREMENT_LEN: usize = 1000;
/// The most permissions one requirement names (each occurrence counts).
pub const MAX_REQUIREMENT_NAMES: usize = 64;
/// The deepest one requirement nests parentheses.
pub const MAX_REQUIREMENT_DEPTH: usize = 16;

/// Why a permission, a grant or a requirement was not accepted; Display is a clear one-line
/// message for an API client (it quotes the offending text, truncated to 60 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionError(String);

impl fmt::Display for PermissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PermissionError {}

/// Checks a permission a credential or role may be granted: a name, `prefix.*`, or `*`.
pub fn check_grant(s: &str) -> Result<(), PermissionError> {
    match grant_flaw(s) {
        None => Ok(()),
        Some(flaw) => Err(PermissionError(format!("permission {} is not valid: {}", quote(s), flaw.describe(0)))),
    }
}

/// Checks a permission name a requirement may name (no wildcard).
pub fn check_name(s: &str) -> Result<(), PermissionError> {
    match name_flaw(s) {
        None => Ok(()),
        Some(flaw) => Err(PermissionError(format!("permission {} is not valid: {}", quote(s), flaw.describe(0)))),
    }
}

/// What makes a text not a permission name or grant. Positions are byte offsets in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    Empty,
    TooLong,
    Char(usize, char),
    /// A `*` in a name (a requirement's).
    Wildcard(usize),
    /// A `*` in a grant other than `*` alone or a final `.*`.
    MisplacedWildcard(usize),
    Dot,
    DoubleDot(usize),
    Keyword,
}

impl Flaw {
    /// What is wrong, for a message; positions are shifted by `base` (where the text starts in
    /// the whole input).
    fn describe(self, base: usize) -> String {
        match self {
            Flaw::Empty => "it is empty".to_owned(),
            Flaw::TooLong => format!("it is longer than {MAX_PERMISSION_LEN} characters"),
            Flaw::Char(i, c) => {
                format!("{} at byte {} is not one of A-Z a-z 0-9 _ . : -", quote(c.encode_utf8(&mut [0; 4])), base + i)
            }
            Flaw::Wildcard(i) => format!("\"*\" at byte {}: a wildcard may be granted, not required", base + i),
            Flaw::MisplacedWildcard(i) => {
                format!("\"*\" at byte {}: a wildcard is \"*\" alone or a final \".*\", as in \"images.*\"", base + i)
            }
            Flaw::Dot => "it starts or ends with \".\"".to_owned(),
            Flaw::DoubleDot(i) => format!("it has \"..\" at byte {}", base + i),
            Flaw::Keyword => "AND and OR are operators, not names".to_owned(),
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn is_keyword(s: &str) -> bool {
    s.eq_ignore_ascii_case("and") || s.eq_ignore_ascii_case("or")
}

/// Whether `s` has more than [`MAX_PERMISSION_LEN`] characters.
fn too_long(s: &str) -> bool {
    s.len() > MAX_PERMISSION_LEN && s.chars().nth(MAX_PERMISSION_LEN).is_some()
}

/// Why `s` is not a permission name, if it is not.
fn name_flaw(s: &str) -> Option<Flaw> {
    if s.is_empty() {
        return Some(Flaw::Empty);
    }
    if too_long(s) {
        return Some(Flaw::TooLong);
    }
    // Every byte before the first wrong one is ASCII, so the wrong one starts a character.
    if let Some(i) = s.bytes().position(|b| !is_name_byte(b)) {
        let c = s[i..].chars().next().expect("a character at a boundary");
        return Some(if c == '*' { Flaw::Wildcard(i) } else { Flaw::Char(i, c) });
    }
    if s.starts_with('.') || s.ends_with('.') {
        return Some(Flaw::Dot);
    }
    if let Some(i) = s.find("..") {
        return Some(Flaw::DoubleDot(i));
    }
    if is_keyword(s) {
        return Some(Flaw::Keyword);
    }
    None
}

/// Why `s` is not a grant (a name, `prefix.*` or `*`), if it is not.
fn grant_flaw(s: &str) -> Option<Flaw> {
    if s == "*" {
        return None;
    }
    if too_long(s) {
        return Some(Flaw::TooLong);
    }
    let name = s.strip_suffix(".*").unwrap_or(s);
    match name_flaw(name) {
        Some(Flaw::Wildcard(i)) => Some(Flaw::MisplacedWildcard(i)),
        // `.*`: a wildcard after no name.
        Some(Flaw::Empty) if name.len() < s.len() => Some(Flaw::Dot),
        flaw => flaw,
    }
}

/// `s` in double quotes for a message, printable ASCII as it is and everything else escaped (so
/// the message is one line of ASCII), cut after 60 characters (then `...` follows the quote).
fn quote(s: &str) -> String {
    const SHOWN: usize = 60;
    let mut out = String::with_capacity(s.len().min(SHOWN) + 5);
    out.push('"');
    for c in s.chars().take(SHOWN) {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.extend(c.escape_default()),
        }
    }
    out.push('"');
    if s.chars().nth(SHOWN).is_some() {
        out.push_str("...");
    }
    out
}

/// What a credential may do: the union of its own permissions and its roles' (built when a
/// credential is loaded into the cache, checked on every request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Everything granted (names, `prefix.*`, `*`), deduplicated, in [`lookup_order`]: names are
    /// looked up here by binary search (a name has no `*`, so it is never taken for a wildcard).
    granted: Box<[Box<str>]>,
    /// Indices into `granted`, in alphabetical order (what [`Grants::iter`] gives).
    alphabetical: Box<[u32]>,
    /// The `prefix.` of each `prefix.*` granted (the dot kept), in [`lookup_order`].
    prefixes: Box<[Box<str>]>,
    /// Whether `*` is granted.
    all: bool,
}

/// The order [`Grants`] looks names up in: by length, then by bytes. Most comparisons end at
/// the lengths, much cheaper than comparing text (a binary search in alphabetical order costs
/// about four times as much).
fn lookup_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn lookup(list: &[Box<str>], s: &str) -> bool {
    list.binary_search_by(|g| lookup_order(g, s)).is_ok()
}

impl Grants {
    /// The union of `granted`, each checked with [`check_grant`] (the first invalid one is the
    /// error); duplicates are dropped.
    pub fn new<I, S>(granted: I) -> Result<Self, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for g in granted {
            let g = g.as_ref();
            check_grant(g)?;
            list.push(Box::<str>::from(g));
        }
        list.sort_unstable_by(|a, b| lookup_order(a, b));
        list.dedup();
        let mut alphabetical: Vec<u32> = (0..list.len() as u32).collect();
        alphabetical.sort_unstable_by(|&a, &b| list[a as usize].cmp(&list[b as usize]));
        let prefixes = list.iter().filter_map(|g| g.strip_suffix('*')).filter(|p| !p.is_empty()).map(Box::from);
        // Stripping the same last byte keeps the order.
        let prefixes: Box<[Box<str>]> = prefixes.collect();
        debug_assert!(prefixes.is_sorted_by(|a, b| lookup_order(a, b).is_lt()));
        let all = lookup(&list, "*");
        Ok(Self { granted: list.into(), alphabetical: alphabetical.into(), prefixes, all })
    }

    /// Whether `name` is granted: exactly, by a `prefix.*` (any name that starts with `prefix.`,
    /// at any depth) or by `*`. Allocation-free.
    pub fn allows(&self, name: &str) -> bool {
        self.all
            || lookup(&self.granted, name)
            || (!self.prefixes.is_empty()
                && name.bytes().enumerate().any(|(i, b)| b == b'.' && lookup(&self.prefixes, &name[..=i])))
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
    }

    /// The granted strings, sorted and deduplicated (for the `x-keygate-permissions` header).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.alphabetical.iter().map(|&i| &*self.granted[i as usize])
    }
}

/// A parsed requirement expression (see the module's grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The canonical form, which `Display` writes.
    text: Box<str>,
    /// The expression flattened in pre-order: an operator, then its operands' subtrees one after
    /// the other. An `AND`'s operands are names and `OR`s, an `OR`'s names and `AND`s; every
    /// operator has two operands or more.
    nodes: Box<[Node]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// The permission `text[start..end]`.
    Name { start: u16, end: u16 },
    /// All of the operands, the subtrees in `nodes[here + 1..end]`.
    And { end: u16 },
    /// Any of the operands, the subtrees in `nodes[here + 1..end]`.
    Or { end: u16 },
}

impl Requirement {
    /// Whether `grants` meet the requirement. Allocation-free; stops at the first operand that
    /// decides an `AND` or an `OR`.
    pub fn is_met_by(&self, grants: &Grants) -> bool {
        // A requirement names at least one permission and has no negation: `*` meets every one,
        // no grant none.
        grants.all || (!grants.is_empty() && self.holds(0, grants))
    }

    /// Every permission the requirement names, in order (repeats included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().filter_map(|n| match *n {
            Node::Name { start, end } => Some(&self.text[start as usize..end as usize]),
            Node::And { .. } | Node::Or { .. } => None,
        })
    }

    /// Whether the subtree at `nodes[at]` holds.
    fn holds(&self, at: usize, grants: &Grants) -> bool {
        match self.nodes[at] {
            Node::Name { start, end } => grants.allows(&self.text[start as usize..end as usize]),
            Node::And { end } => self.operands(at, end).all(|i| self.holds(i, grants)),
            Node::Or { end } => self.operands(at, end).any(|i| self.holds(i, grants)),
        }
    }

    /// Where the operands of the operator at `nodes[at]` start, its subtree ending at `end`.
    fn operands(&self, at: usize, end: u16) -> impl Iterator<Item = usize> + '_ {
        // Every operator has operands: the first is right after it.
        std::iter::successors(Some(at + 1), move |&i| Some(self.subtree_end(i)).filter(|&next| next < end as usize))
    }

    fn subtree_end(&self, at: usize) -> usize {
        match self.nodes[at] {
            Node::Name { .. } => at + 1,
            Node::And { end } | Node::Or { end } => end as usize,
        }
    }
}

impl std::str::FromStr for Requirement {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, PermissionError> {
        let fail = |what: String| PermissionError(format!("requirement {}: {what}", quote(s)));
        if s.bytes().all(|b| b.is_ascii_whitespace()) {
            return Err(PermissionError("requirement is empty".to_owned()));
        }
        if s.len() > MAX_REQUIREMENT_LEN {
            return Err(fail(format!("it is {} bytes long, more than {MAX_REQUIREMENT_LEN}", s.len())));
        }
        let mut parser = Parser::new(s).map_err(fail)?;
        let expr = parser.or().map_err(fail)?;
        if let Tok::Close = parser.tok {
            return Err(fail(format!("\")\" at byte {} has no matching \"(\"", parser.at)));
        }
        let mut canonical = Canonical::default();
        canonical.emit(&expr, false);
        if canonical.text.len() > MAX_REQUIREMENT_LEN {
            return Err(fail(format!(
                "it is {} bytes long in canonical form (single spaces around AND and OR), more than {MAX_REQUIREMENT_LEN}",
                canonical.text.len()
            )));
        }
        Ok(Requirement { text: canonical.text.into(), nodes: canonical.nodes.into() })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Requirement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Requirement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Requirement {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_REQUIREMENT_LEN))
            .description(Some(
                "Permissions required: names joined by AND and OR (AND binds tighter), with parentheses.",
            ))
            .examples(["videos.create AND (images.read OR admin)"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Requirement {}

/// An expression as parsed, before it is flattened. Operands of an `And` are never `And`s, of an
/// `Or` never `Or`s, and each has two or more.
enum Expr<'a> {
    Name(&'a str),
    And(Vec<Expr<'a>>),
    Or(Vec<Expr<'a>>),
}

#[derive(Debug, Clone, Copy)]
enum Tok<'a> {
    Name(&'a str),
    /// `AND`, as written.
    And(&'a str),
    /// `OR`, as written.
    Or(&'a str),
    Open,
    Close,
    End,
}

/// A recursive descent parser, one token ahead. Recursion is bounded by
/// [`MAX_REQUIREMENT_DEPTH`].
struct Parser<'a> {
    src: &'a str,
    /// The current token, where it starts and where it ends.
    tok: Tok<'a>,
    at: usize,
    end: usize,
    /// The token before it and where it starts (for messages).
    prev: Option<(Tok<'a>, usize)>,
    names: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, String> {
        let mut p = Parser { src, tok: Tok::End, at: 0, end: 0, prev: None, names: 0, depth: 0 };
        p.advance()?;
        p.prev = None;
        Ok(p)
    }

    /// Reads the next token.
    fn advance(&mut self) -> Result<(), String> {
        self.prev = Some((self.tok, self.at));
        let b = self.src.as_bytes();
        let mut i = self.end;
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let (tok, end) = match b.get(i) {
            None => (Tok::End, i),
            Some(b'(') => (Tok::Open, i + 1),
            Some(b')') => (Tok::Close, i + 1),
            Some(_) => {
                // A word ends at ASCII whitespace or a parenthesis, so it is cut at char boundaries.
                let len = b[i..]
                    .iter()
                    .position(|&c| c.is_ascii_whitespace() || c == b'(' || c == b')')
                    .unwrap_or(b.len() - i);
                let word = &self.src[i..i + len];
                let tok = if word.eq_ignore_ascii_case("and") {
                    Tok::And(word)
                } else if word.eq_ignore_ascii_case("or") {
                    Tok::Or(word)
                } else {
                    if let Some(flaw) = name_flaw(word) {
                        return Err(format!(
                            "{} at byte {i} is not a permission name: {}",
                            quote(word),
                            flaw.describe(i)
                        ));
                    }
                    self.names += 1;
                    if self.names > MAX_REQUIREMENT_NAMES {
                        return Err(format!(
                            "it names more than {MAX_REQUIREMENT_NAMES} permissions (the {}th at byte {i})",
                            self.names
                        ));
                    }
                    Tok::Name(word)
                };
                (tok, i + len)
            }
        };
        self.tok = tok;
        self.at = i;
        self.end = end;
        Ok(())
    }

    /// `or := and ("OR" and)*`
    fn or(&mut self) -> Result<Expr<'a>, String> {
        let mut terms = Vec::new();
        loop {
            match self.and()? {
                Expr::Or(inner) => terms.extend(inner),
                e => terms.push(e),
            }
            let Tok::Or(_) = self.tok else { break };
            self.advance()?;
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Expr::Or(terms) })
    }

    /// `and := atom ("AND" atom)*`
    fn and(&mut self) -> Result<Expr<'a>, String> {
        let mut atoms = Vec::new();
        loop {
            match self.atom()? {
                Expr::And(inner) => atoms.extend(inner),
                e => atoms.push(e),
            }
            match self.tok {
                Tok::And(_) => self.advance()?,
                Tok::Name(name) => {
                    return Err(format!("AND or OR is missing before {} at byte {}", quote(name), self.at));
                }
                Tok::Open => return Err(format!("AND or OR is missing before \"(\" at byte {}", self.at)),
                Tok::Or(_) | Tok::Close | Tok::End => break,
            }
        }
        Ok(if atoms.len() == 1 { atoms.pop().expect("one atom") } else { Expr::And(atoms) })
    }

    /// `atom := name | "(" or ")"`
    fn atom(&mut self) -> Result<Expr<'a>, String> {
        match self.tok {
            Tok::Name(name) => {
                self.advance()?;
                Ok(Expr::Name(name))
            }
            Tok::Open => {
                let open = self.at;
                if self.depth == MAX_REQUIREMENT_DEPTH {
                    return Err(format!(
                        "\"(\" at byte {open} nests parentheses more than {MAX_REQUIREMENT_DEPTH} deep"
                    ));
                }
                self.depth += 1;
                self.advance()?;
                let e = self.or()?;
                // `and` stops only at OR (which `or` takes), ")" or the end.
                let Tok::Close = self.tok else { return Err(format!("\"(\" at byte {open} is not closed")) };
                self.depth -= 1;
                self.advance()?;
                Ok(e)
            }
            Tok::And(_) | Tok::Or(_) | Tok::Close | Tok::End => Err(self.missing_operand()),
        }
    }

    /// The message for a permission or "(" expected where the current token is not one.
    fn missing_operand(&self) -> String {
        match (self.prev, self.tok) {
            (Some((Tok::And(op) | Tok::Or(op), at)), _) => {
                format!("{} at byte {at} has no permission after it", quote(op))
            }
            (_, Tok::And(op) | Tok::Or(op)) => {
                format!("{} at byte {} has no permission before it", quote(op), self.at)
            }
            (Some((Tok::Open, at)), Tok::Close) => format!("\"()\" at byte {at} is empty"),
            (Some((Tok::Open, at)), Tok::End) => format!("\"(\" at byte {at} is not closed"),
            (None, Tok::Close) => format!("\")\" at byte {} has no matching \"(\"", self.at),
            _ => format!("a permission or \"(\" is missing at byte {}", self.at),
        }
    }
}

/// Writes an [`Expr`] in canonical form and flattens it into [`Node`]s at once.
#[derive(Default)]
struct Canonical {
    text: String,
    nodes: Vec<Node>,
}

impl Canonical {
    /// `in_and`: whether `e` is an operand of an `AND` (an `OR` there needs parentheses).
    fn emit(&mut self, e: &Expr<'_>, in_and: bool) {
        // Positions fit in u16: the input is at most 1000 bytes with at most 64 names, so the
        // canonical text (names, 63 operators of 5 bytes, 63 pairs of parentheses) is under 2 KB.
        match e {
            Expr::Name(name) => {
                let start = self.text.len() as u16;
                self.text.push_str(name);
                self.nodes.push(Node::Name { start, end: self.text.len() as u16 });
            }
            Expr::And(operands) => {
                let at = self.nodes.len();
                self.nodes.push(Node::And { end: 0 });
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(" AND ");
                    }
                    self.emit(operand, true);
                }
                self.nodes[at] = Node::And { end: self.nodes.len() as u16 };
            }
            Expr::Or(operands) => {
                if in_and {
                    self.text.push('(');
                }
                let at = self.nodes.len();
                self.nodes.push(Node::Or { end: 0 });
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(" OR ");
                    }
                    self.emit(operand, false);
                }
                self.nodes[at] = Node::Or { end: self.nodes.len() as u16 };
                if in_and {
                    self.text.push(')');
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn req(s: &str) -> Requirement {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<Requirement>() {
            Ok(r) => panic!("{s:?} parsed as {r}"),
            Err(e) => e.to_string(),
        }
    }

    fn grants(g: &[&str]) -> Grants {
        Grants::new(g).unwrap()
    }

    fn grant_err(s: &str) -> String {
        check_grant(s).unwrap_err().to_string()
    }

    fn name_err(s: &str) -> String {
        check_name(s).unwrap_err().to_string()
    }

    #[test]
    fn names_and_grants() {
        let long = "a".repeat(MAX_PERMISSION_LEN);
        for ok in
            ["videos.create", "a", "A-Z_a-z:0-9", "billing:invoices.read", "x.y.z", "andy", "ORDERS", "_", "-", &long]
        {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
            assert_eq!(check_grant(ok), Ok(()), "{ok}");
        }
        let long_wildcard = format!("{}.*", "a".repeat(MAX_PERMISSION_LEN - 2));
        for ok in ["*", "images.*", "a.b.*", "and.x.*", &long_wildcard] {
            assert_eq!(check_grant(ok), Ok(()), "{ok}");
            assert!(check_name(ok).is_err(), "{ok}");
        }
    }

    #[test]
    fn grant_errors() {
        assert_eq!(grant_err(""), r#"permission "" is not valid: it is empty"#);
        assert_eq!(
            grant_err(&"a".repeat(101)),
            format!("permission \"{}\"... is not valid: it is longer than 100 characters", "a".repeat(60))
        );
        assert_eq!(
            grant_err(&format!("{}.*", "a".repeat(MAX_PERMISSION_LEN - 1))),
            format!("permission \"{}\"... is not valid: it is longer than 100 characters", "a".repeat(60))
        );
        assert_eq!(
            grant_err("a b"),
            r#"permission "a b" is not valid: " " at byte 1 is not one of A-Z a-z 0-9 _ . : -"#
        );
        assert_eq!(
            grant_err("vidéo"),
            r#"permission "vid\u{e9}o" is not valid: "\u{e9}" at byte 3 is not one of A-Z a-z 0-9 _ . : -"#
        );
        assert_eq!(
            grant_err("a\"b"),
            r#"permission "a\"b" is not valid: "\"" at byte 1 is not one of A-Z a-z 0-9 _ . : -"#
        );
        assert_eq!(
            grant_err("a\nb"),
            r#"permission "a\nb" is not valid: "\n" at byte 1 is not one of A-Z a-z 0-9 _ . : -"#
        );
        assert_eq!(grant_err(".a"), r#"permission ".a" is not valid: it starts or ends with ".""#);
        assert_eq!(grant_err("a."), r#"permission "a." is not valid: it starts or ends with ".""#);
        assert_eq!(grant_err(".*"), r#"permission ".*" is not valid: it starts or ends with ".""#);
        assert_eq!(grant_err("a..*"), r#"permission "a..*" is not valid: it starts or ends with ".""#);
        assert_eq!(grant_err("a..b"), r#"permission "a..b" is not valid: it has ".." at byte 1"#);
        assert_eq!(grant_err("and"), r#"permission "and" is not valid: AND and OR are operators, not names"#);
        assert_eq!(grant_err("Or"), r#"permission "Or" is not valid: AND and OR are operators, not names"#);
        assert_eq!(grant_err("or.*"), r#"permission "or.*" is not valid: AND and OR are operators, not names"#);
        let misplaced = r#"a wildcard is "*" alone or a final ".*", as in "images.*""#;
        assert_eq!(grant_err("images*"), format!(r#"permission "images*" is not valid: "*" at byte 6: {misplaced}"#));
        assert_eq!(grant_err("*.read"), format!(r#"permission "*.read" is not valid: "*" at byte 0: {misplaced}"#));
        assert_eq!(grant_err("a.*.b"), format!(r#"permission "a.*.b" is not valid: "*" at byte 2: {misplaced}"#));
        assert_eq!(grant_err("a.**"), format!(r#"permission "a.**" is not valid: "*" at byte 2: {misplaced}"#));
        assert_eq!(grant_err("**"), format!(r#"permission "**" is not valid: "*" at byte 0: {misplaced}"#));
        assert_eq!(grant_err("a.*.*"), format!(r#"permission "a.*.*" is not valid: "*" at byte 2: {misplaced}"#));
    }

    #[test]
    fn name_errors() {
        let wildcard = "a wildcard may be granted, not required";
        assert_eq!(name_err("images.*"), format!(r#"permission "images.*" is not valid: "*" at byte 7: {wildcard}"#));
        assert_eq!(name_err("*"), format!(r#"permission "*" is not valid: "*" at byte 0: {wildcard}"#));
        assert_eq!(name_err(""), r#"permission "" is not valid: it is empty"#);
        assert_eq!(name_err("AND"), r#"permission "AND" is not valid: AND and OR are operators, not names"#);
        assert_eq!(name_err("x..y"), r#"permission "x..y" is not valid: it has ".." at byte 1"#);
        // Long input is quoted cut, on one line of ASCII.
        let e = name_err(&format!("{}\u{7}\r\n", "é".repeat(200)));
        assert!(e.starts_with(&format!("permission \"{}\"... is not valid", r"\u{e9}".repeat(60))), "{e}");
        assert!(e.is_ascii() && !e.contains('\n'), "{e}");
    }

    #[test]
    fn grants_allow() {
        let g = grants(&["videos.create", "images.*", "billing:invoices.read", "a.b.*"]);
        for yes in
            ["videos.create", "images.read", "images.x.y.z", "images.", "billing:invoices.read", "a.b.c", "a.b.c.d"]
        {
            assert!(g.allows(yes), "{yes}");
        }
        for no in [
            "videos",
            "videos.create.x",
            "videos.delete",
            "images",
            "imagesx.read",
            "billing",
            "a.b",
            "a.c",
            "a",
            "",
            "*",
        ] {
            assert!(!g.allows(no), "{no}");
        }
        let all = grants(&["*"]);
        assert!(all.allows("anything") && all.allows("") && !all.is_empty());
        let none = Grants::default();
        assert!(!none.allows("a") && none.is_empty() && none.iter().next().is_none());
        assert_eq!(grants(&[]), Grants::default());
    }

    #[test]
    fn grants_sorted_deduplicated() {
        let g = Grants::new(["b", "a.*", "*", "b", "a", "a.*"]).unwrap();
        assert_eq!(g.iter().collect::<Vec<_>>(), ["*", "a", "a.*", "b"]);
        assert_eq!(g, Grants::new(vec!["a".to_owned(), "b".to_owned(), "a.*".to_owned(), "*".to_owned()]).unwrap());
        assert_eq!(
            Grants::new(["ok", "not ok", "and"]).unwrap_err().to_string(),
            r#"permission "not ok" is not valid: " " at byte 3 is not one of A-Z a-z 0-9 _ . : -"#
        );
    }

    #[test]
    fn canonical_form() {
        for (written, canonical) in [
            ("a", "a"),
            ("  a\t", "a"),
            ("((a))", "a"),
            ("a and b", "a AND b"),
            ("a\tAnD\nb  oR\r\nc", "a AND b OR c"),
            ("a OR b AND c", "a OR b AND c"),
            ("(a OR b) AND c", "(a OR b) AND c"),
            ("(a or (b))and c", "(a OR b) AND c"),
            ("a AND(b OR c)", "a AND (b OR c)"),
            ("(a AND b) AND (c AND d)", "a AND b AND c AND d"),
            ("a OR (b OR (c OR d))", "a OR b OR c OR d"),
            ("(a AND b) OR (c AND d)", "a AND b OR c AND d"),
            ("((a OR b) AND (c OR d)) OR e", "(a OR b) AND (c OR d) OR e"),
            ("a AND ((b AND c) OR d)", "a AND (b AND c OR d)"),
            ("a AND (b OR (c AND (d OR e)))", "a AND (b OR c AND (d OR e))"),
            ("videos.create AND (images.read OR admin)", "videos.create AND (images.read OR admin)"),
            ("aANDb", "aANDb"),
            ("andy OR orlando", "andy OR orlando"),
            ("a AND a", "a AND a"),
        ] {
            let r = req(written);
            assert_eq!(r.to_string(), canonical, "{written:?}");
            assert_eq!(req(canonical), r, "{written:?}");
        }
    }

    #[test]
    fn evaluation() {
        let r = req("videos.create AND (images.read OR admin)");
        assert!(r.is_met_by(&grants(&["videos.create", "images.read"])));
        assert!(r.is_met_by(&grants(&["videos.create", "admin"])));
        assert!(r.is_met_by(&grants(&["videos.*", "images.*"])));
        assert!(r.is_met_by(&grants(&["*"])));
        assert!(!r.is_met_by(&grants(&["videos.create"])));
        assert!(!r.is_met_by(&grants(&["images.read", "admin"])));
        assert!(!r.is_met_by(&grants(&["videos.create", "images"])));
        assert!(!r.is_met_by(&Grants::default()));
        // AND binds tighter than OR.
        let r = req("a OR b AND c");
        assert!(r.is_met_by(&grants(&["a"])));
        assert!(!r.is_met_by(&grants(&["b"])));
        assert!(r.is_met_by(&grants(&["b", "c"])));
        let r = req("(a OR b) AND c");
        assert!(!r.is_met_by(&grants(&["a"])));
        assert!(r.is_met_by(&grants(&["a", "c"])));
    }

    #[test]
    fn names_in_order() {
        let r = req("x AND (y OR z.w AND x) OR v");
        assert_eq!(r.names().collect::<Vec<_>>(), ["x", "y", "z.w", "x", "v"]);
    }

    #[test]
    fn syntax_errors() {
        for (written, message) in [
            ("", "requirement is empty"),
            (" \t\r\n", "requirement is empty"),
            ("a AND", r#"requirement "a AND": "AND" at byte 2 has no permission after it"#),
            ("a or", r#"requirement "a or": "or" at byte 2 has no permission after it"#),
            ("AND a", r#"requirement "AND a": "AND" at byte 0 has no permission before it"#),
            ("a AND OR b", r#"requirement "a AND OR b": "AND" at byte 2 has no permission after it"#),
            ("a AND ) b", r#"requirement "a AND ) b": "AND" at byte 2 has no permission after it"#),
            ("(OR a)", r#"requirement "(OR a)": "OR" at byte 1 has no permission before it"#),
            ("a b", r#"requirement "a b": AND or OR is missing before "b" at byte 2"#),
            ("a (b)", r#"requirement "a (b)": AND or OR is missing before "(" at byte 2"#),
            ("(a)b", r#"requirement "(a)b": AND or OR is missing before "b" at byte 3"#),
            ("(a", r#"requirement "(a": "(" at byte 0 is not closed"#),
            ("a AND (", r#"requirement "a AND (": "(" at byte 6 is not closed"#),
            ("((a) OR b", r#"requirement "((a) OR b": "(" at byte 0 is not closed"#),
            ("a)", r#"requirement "a)": ")" at byte 1 has no matching "(""#),
            (")", r#"requirement ")": ")" at byte 0 has no matching "(""#),
            ("(a))", r#"requirement "(a))": ")" at byte 3 has no matching "(""#),
            ("()", r#"requirement "()": "()" at byte 0 is empty"#),
            ("a AND ( )", r#"requirement "a AND ( )": "()" at byte 6 is empty"#),
            (
                "a AND images.*",
                r#"requirement "a AND images.*": "images.*" at byte 6 is not a permission name: "*" at byte 13: a wildcard may be granted, not required"#,
            ),
            (
                "*",
                r#"requirement "*": "*" at byte 0 is not a permission name: "*" at byte 0: a wildcard may be granted, not required"#,
            ),
            (
                "a && b",
                r#"requirement "a && b": "&&" at byte 2 is not a permission name: "&" at byte 2 is not one of A-Z a-z 0-9 _ . : -"#,
            ),
            (
                "a AND .b",
                r#"requirement "a AND .b": ".b" at byte 6 is not a permission name: it starts or ends with ".""#,
            ),
            (
                "x AND a..b",
                r#"requirement "x AND a..b": "a..b" at byte 6 is not a permission name: it has ".." at byte 7"#,
            ),
            (
                "a\u{a0}AND b",
                r#"requirement "a\u{a0}AND b": "a\u{a0}AND" at byte 0 is not a permission name: "\u{a0}" at byte 1 is not one of A-Z a-z 0-9 _ . : -"#,
            ),
        ] {
            assert_eq!(err(written), message, "{written:?}");
        }
    }

    #[test]
    fn limits() {
        // Length: 1000 bytes as written.
        let name = "a".repeat(MAX_PERMISSION_LEN);
        assert!(check_name(&name).is_ok());
        assert_eq!(
            err(&"a".repeat(MAX_PERMISSION_LEN + 1)),
            format!(
                "requirement \"{0}\"...: \"{0}\"... at byte 0 is not a permission name: it is longer than 100 characters",
                "a".repeat(60)
            )
        );
        let padded = format!("{name}{}", " ".repeat(MAX_REQUIREMENT_LEN - MAX_PERMISSION_LEN));
        assert_eq!(req(&padded).to_string(), name);
        assert_eq!(
            err(&format!("{padded} ")),
            format!("requirement \"{}\"...: it is 1001 bytes long, more than 1000", &padded[..60])
        );

        // Names: 64.
        let names = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>().join(" OR ");
        assert_eq!(req(&names(MAX_REQUIREMENT_NAMES)).names().count(), 64);
        let e = err(&names(MAX_REQUIREMENT_NAMES + 1));
        assert!(e.ends_with(": it names more than 64 permissions (the 65th at byte 438)"), "{e}");

        // Nesting: 16 levels, never a stack overflow.
        let nest = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(req(&nest(MAX_REQUIREMENT_DEPTH)).to_string(), "a");
        assert!(err(&nest(17)).ends_with(r#": "(" at byte 16 nests parentheses more than 16 deep"#));
        assert!(err(&nest(499)).ends_with(r#": "(" at byte 16 nests parentheses more than 16 deep"#));
        assert!(err(&"(".repeat(1000)).ends_with(r#": "(" at byte 16 nests parentheses more than 16 deep"#));
        let deep = (0..16).fold("z".to_owned(), |inner, i| format!("x{i} AND (y{i} OR {inner})"));
        let r = req(&deep);
        assert_eq!(req(&r.to_string()), r);
        assert!(r.is_met_by(&grants(&["x15", "y15"])) && !r.is_met_by(&grants(&["x15", "y14"])));

        // The canonical form is under the limit too: "(n OR n)AND(n OR n)..." gains two spaces
        // per AND.
        let term = format!("({0} OR {0})", "n".repeat(11));
        let tight = vec![term; 32].join("AND");
        assert_eq!(tight.len(), 989);
        let e = err(&tight);
        assert!(
            e.ends_with(": it is 1051 bytes long in canonical form (single spaces around AND and OR), more than 1000")
        );
    }

    #[test]
    fn serde_as_canonical_string() {
        let r = req("a and (b or c)");
        assert_eq!(serde_json::to_string(&r).unwrap(), r#""a AND (b OR c)""#);
        assert_eq!(serde_json::from_str::<Requirement>(r#""a AND (b or c)""#).unwrap(), r);
        let e = serde_json::from_str::<Requirement>(r#""a AND""#).unwrap_err().to_string();
        assert!(e.starts_with(r#"requirement "a AND": "AND" at byte 2 has no permission after it"#), "{e}");
        assert!(serde_json::from_str::<Requirement>("1").is_err());
    }

    #[test]
    fn errors_are_errors() {
        fn is_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
        is_error(&check_name("").unwrap_err());
    }

    // ---- properties ----

    /// A generated expression, the reference for parsing and evaluation.
    #[derive(Debug, Clone)]
    enum Tree {
        Name(String),
        And(Box<Tree>, Box<Tree>),
        Or(Box<Tree>, Box<Tree>),
    }

    /// Names from a small pool (so that grants and requirements meet), and any names.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[ab]",
            3 => "[ab]\\.[ab]",
            2 => "[ab]\\.[ab]\\.[ab]",
            1 => "[A-Za-z0-9_:-]([A-Za-z0-9_.:-]{0,8}[A-Za-z0-9_:-])?"
                .prop_filter("a name", |s| !s.contains("..") && !is_keyword(s)),
        ]
    }

    /// Grants from the same pool, with wildcards.
    fn grant() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => name(),
            2 => "[ab]\\.\\*",
            1 => "[ab]\\.[ab]\\.\\*",
            1 => Just("*".to_owned()),
        ]
    }

    fn tree() -> impl Strategy<Value = Tree> {
        name().prop_map(Tree::Name).prop_recursive(5, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(l, r)| Tree::And(Box::new(l), Box::new(r))),
                (inner.clone(), inner).prop_map(|(l, r)| Tree::Or(Box::new(l), Box::new(r))),
            ]
        })
    }

    /// Writes `t` as tokens: parentheses where precedence needs them, and more where `style`
    /// says; keywords in any case.
    fn tokens(t: &Tree, in_and: bool, style: &mut impl Iterator<Item = u8>, out: &mut Vec<String>) {
        let s = style.next().unwrap_or(0);
        let (op, l, r) = match t {
            Tree::Name(n) => {
                let extra = s.is_multiple_of(5);
                if extra {
                    out.push("(".into());
                }
                out.push(n.clone());
                if extra {
                    out.push(")".into());
                }
                return;
            }
            Tree::And(l, r) => ("and", l, r),
            Tree::Or(l, r) => ("or", l, r),
        };
        let parens = (op == "or" && in_and) || s.is_multiple_of(4);
        if parens {
            out.push("(".into());
        }
        tokens(l, op == "and", style, out);
        let keyword: String = op
            .chars()
            .enumerate()
            .map(|(i, c)| if (s >> (2 + i)) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect();
        out.push(keyword);
        tokens(r, op == "and", style, out);
        if parens {
            out.push(")".into());
        }
    }

    /// Joins tokens with whitespace: some between two words, any or none next to a parenthesis.
    fn render(t: &Tree, style: &[u8]) -> String {
        let mut style = style.iter().copied().cycle();
        let mut toks = Vec::new();
        tokens(t, false, &mut style, &mut toks);
        const SPACE: [&str; 5] = [" ", "\t", "  ", "\n", " \r\n "];
        let mut out = String::from(["", " ", "\t"][style.next().unwrap_or(0) as usize % 3]);
        for (i, tok) in toks.iter().enumerate() {
            if i > 0 {
                let s = style.next().unwrap_or(0) as usize;
                let word = |t: &str| t != "(" && t != ")";
                if word(&toks[i - 1]) && word(tok) {
                    out.push_str(SPACE[s % SPACE.len()]);
                } else if s.is_multiple_of(2) {
                    out.push_str(SPACE[s / 2 % SPACE.len()]);
                }
            }
            out.push_str(tok);
        }
        out.push_str(["", " ", "\n"][style.next().unwrap_or(0) as usize % 3]);
        out
    }

    fn leaves<'t>(t: &'t Tree, out: &mut Vec<&'t str>) {
        match t {
            Tree::Name(n) => out.push(n),
            Tree::And(l, r) | Tree::Or(l, r) => {
                leaves(l, out);
                leaves(r, out);
            }
        }
    }

    fn naive_allows(granted: &[String], name: &str) -> bool {
        granted.iter().any(|g| {
            g == "*" || g == name || g.strip_suffix('*').is_some_and(|p| p.ends_with('.') && name.starts_with(p))
        })
    }

    fn naive_eval(t: &Tree, granted: &[String]) -> bool {
        match t {
            Tree::Name(n) => naive_allows(granted, n),
            Tree::And(l, r) => naive_eval(l, granted) && naive_eval(r, granted),
            Tree::Or(l, r) => naive_eval(l, granted) || naive_eval(r, granted),
        }
    }

    /// Whether every pair of parentheses in a canonical text is needed: it holds an OR at its own
    /// level and is an operand of an AND.
    fn parens_needed(text: &str) -> bool {
        let mut open = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => open.push(i),
                ')' => {
                    let start = open.pop().expect("balanced");
                    let inner = &text[start + 1..i];
                    let mut depth = 0;
                    let mut has_or = false;
                    for (j, c) in inner.char_indices() {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ if depth == 0 && inner[j..].starts_with(" OR ") => has_or = true,
                            _ => {}
                        }
                    }
                    let in_and = text[..start].ends_with("AND ") || text[i + 1..].starts_with(" AND");
                    if !has_or || !in_and {
                        return false;
                    }
                }
                _ => {}
            }
        }
        open.is_empty()
    }

    /// A reference grant check, written from the grammar.
    fn naive_grant(s: &str) -> bool {
        let name = |n: &str| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
                && !n.starts_with('.')
                && !n.ends_with('.')
                && !n.contains("..")
                && !["and", "or"].contains(&n.to_ascii_lowercase().as_str())
        };
        s == "*" || (s.chars().count() <= 100 && name(s.strip_suffix(".*").unwrap_or(s)))
    }

    fn check_message(e: &PermissionError) -> Result<(), TestCaseError> {
        let m = e.to_string();
        prop_assert!(!m.is_empty() && m.is_ascii() && !m.contains('\n') && !m.contains('\r'), "{m:?}");
        Ok(())
    }

    proptest! {
        /// (1) Whatever is written, the canonical form parses back to the same requirement, is a
        /// fixed point, has single spaces and only the parentheses it needs, and names the same
        /// permissions in the same order.
        #[test]
        fn display_round_trips(t in tree(), style in proptest::collection::vec(any::<u8>(), 1..64)) {
            let written = render(&t, &style);
            let r: Requirement = written.parse().map_err(|e| TestCaseError::fail(format!("{written:?}: {e}")))?;
            let shown = r.to_string();
            prop_assert_eq!(shown.parse::<Requirement>(), Ok(r.clone()), "{:?} -> {:?}", written, shown);
            prop_assert_eq!(shown.parse::<Requirement>().unwrap().to_string(), shown.clone());
            prop_assert!(!shown.contains("  ") && !shown.starts_with(' ') && !shown.ends_with(' '), "{:?}", shown);
            prop_assert!(!shown.contains("( ") && !shown.contains(" )"), "{:?}", shown);
            prop_assert!(parens_needed(&shown), "{:?} -> {:?}", written, shown);
            let mut expected = Vec::new();
            leaves(&t, &mut expected);
            prop_assert_eq!(r.names().collect::<Vec<_>>(), expected);
        }

        /// (2) Evaluation agrees with a naive evaluator of the generated tree.
        #[test]
        fn evaluation_is_the_reference(
            t in tree(),
            style in proptest::collection::vec(any::<u8>(), 1..64),
            granted in proptest::collection::vec(grant(), 0..8),
        ) {
            let r: Requirement = render(&t, &style).parse().unwrap();
            let g = Grants::new(&granted).unwrap();
            prop_assert_eq!(r.is_met_by(&g), naive_eval(&t, &granted), "{} with {:?}", r, granted);
            let again: Requirement = r.to_string().parse().unwrap();
            prop_assert_eq!(again.is_met_by(&g), naive_eval(&t, &granted));
        }

        /// (3) `Grants::allows` agrees with a naive check, wildcards included, and `iter` is the
        /// sorted set of what was granted.
        #[test]
        fn allows_is_the_reference(
            granted in proptest::collection::vec(grant(), 0..12),
            asked in proptest::collection::vec(prop_oneof![name(), grant(), ".{0,6}"], 1..16),
        ) {
            let g = Grants::new(&granted).unwrap();
            for name in &asked {
                prop_assert_eq!(g.allows(name), naive_allows(&granted, name), "{:?} with {:?}", name, granted);
            }
            let set: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
            prop_assert_eq!(g.iter().collect::<Vec<_>>(), set.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(g.is_empty(), granted.is_empty());
        }

        /// (4) The parser never panics; what it accepts round-trips within the limits, what it
        /// refuses has a one-line ASCII message.
        #[test]
        fn parser_is_total(s in prop_oneof![any::<String>(), "[ ()aAbnNdDoOrR.*:\t\u{e9}]{0,48}"]) {
            match s.parse::<Requirement>() {
                Ok(r) => {
                    let shown = r.to_string();
                    prop_assert!(shown.len() <= MAX_REQUIREMENT_LEN);
                    prop_assert_eq!(shown.parse::<Requirement>(), Ok(r.clone()));
                    prop_assert!(r.names().count() <= MAX_REQUIREMENT_NAMES);
                    for name in r.names() {
                        prop_assert_eq!(check_name(name), Ok(()));
                    }
                }
                Err(e) => check_message(&e)?,
            }
        }

        /// Grants are checked as the grammar says, and the checks never panic.
        #[test]
        fn grant_check_is_the_reference(s in prop_oneof![any::<String>(), "[aAnNdDoOrR.*:\u{e9} ]{0,6}"]) {
            prop_assert_eq!(check_grant(&s).is_ok(), naive_grant(&s), "{:?}", s);
            prop_assert_eq!(check_name(&s).is_ok(), naive_grant(&s) && !s.contains('*'), "{:?}", s);
            if let Err(e) = check_grant(&s) {
                check_message(&e)?;
            }
        }
    }
}
