//! Which attribute values are well-formed, for the STUN attributes of RFC 8489 §18.3
//! (ALTERNATE-DOMAIN aside): the rules of the `stun-rs` 0.1 decoder, which used to
//! parse requests a second time, so that the replies stay what they were.
//!
//! A request that carries a malformed value of one of these types, anywhere (even after
//! MESSAGE-INTEGRITY, where the attribute is otherwise ignored), gets 400. Types not
//! listed here are "unknown" to the responder: comprehension-required ones get 420
//! (ICE's own attributes aside, whose lengths the parse checks itself).

use std::borrow::Cow;

use precis_profiles::OpaqueString;
use precis_profiles::precis_core::profile::PrecisFastInvocation;

use super::wire::{SHA1_MAC_LEN, SHA256_MAC_LEN, attr};

/// Longest USERNAME, REALM, NONCE, SOFTWARE or reason phrase accepted, in bytes.
const MAX_TEXT: usize = 763;
const USERHASH_LEN: usize = 32;

/// Whether the responder knows the attribute type (and checks its value).
pub(super) fn is_known(kind: u16) -> bool {
    matches!(
        kind,
        attr::MAPPED_ADDRESS
            | attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::ERROR_CODE
            | attr::UNKNOWN_ATTRIBUTES
            | attr::REALM
            | attr::NONCE
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH
            | attr::XOR_MAPPED_ADDRESS
            | attr::PASSWORD_ALGORITHMS
            | attr::SOFTWARE
            | attr::ALTERNATE_SERVER
            | attr::FINGERPRINT
    )
}

/// ICE's attributes (RFC 8445 §16.1), which `stun-rs` does not know either.
pub(super) fn is_ice(kind: u16) -> bool {
    matches!(
        kind,
        attr::PRIORITY | attr::USE_CANDIDATE | attr::ICE_CONTROLLED | attr::ICE_CONTROLLING
    )
}

/// Whether `value` is well-formed for `kind`; `true` for types not known here.
/// USERNAME is checked by [`username`], which also returns the prepared string.
pub(super) fn is_well_formed(kind: u16, value: &[u8]) -> bool {
    match kind {
        attr::USERNAME => username(value).is_some(),
        attr::MAPPED_ADDRESS | attr::XOR_MAPPED_ADDRESS | attr::ALTERNATE_SERVER => {
            is_address(value)
        }
        attr::MESSAGE_INTEGRITY => value.len() == SHA1_MAC_LEN,
        attr::MESSAGE_INTEGRITY_SHA256 => value.len() == SHA256_MAC_LEN,
        attr::USERHASH => value.len() == USERHASH_LEN,
        attr::FINGERPRINT => value.len() >= 4,
        attr::UNKNOWN_ATTRIBUTES => value.len().is_multiple_of(2),
        attr::ERROR_CODE => is_error_code(value),
        attr::REALM | attr::NONCE => {
            value.len() <= MAX_TEXT
                && std::str::from_utf8(value).is_ok_and(is_unquoted_quoted_string)
        }
        attr::SOFTWARE => value.len() <= MAX_TEXT && std::str::from_utf8(value).is_ok(),
        attr::PASSWORD_ALGORITHM => password_algorithm_len(value).is_some(),
        attr::PASSWORD_ALGORITHMS => is_password_algorithms(value),
        _ => true,
    }
}

/// A USERNAME value as the responder uses it: UTF-8, at most 763 bytes, enforced with
/// the PRECIS OpaqueString profile (RFC 8265 §4.2, as RFC 8489 §14.3 asks); `None` if
/// malformed. Borrowed unless the profile changed the string.
pub(super) fn username(value: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(value).ok()?;
    if text.len() > MAX_TEXT {
        return None;
    }
    OpaqueString::enforce(text).ok()
}

/// MAPPED-ADDRESS and the like: family 1 with 4 address bytes or family 2 with 16 (more
/// bytes are tolerated).
fn is_address(value: &[u8]) -> bool {
    match value {
        [_, 1, _, _, ..] => value.len() >= 8,
        [_, 2, _, _, ..] => value.len() >= 20,
        _ => false,
    }
}

/// ERROR-CODE: class 3 to 6, number below 100, a UTF-8 reason of at most 763 bytes.
fn is_error_code(value: &[u8]) -> bool {
    let [_, _, class, number, reason @ ..] = value else {
        return false;
    };
    (3..=6).contains(&(class & 0x07))
        && *number <= 99
        && reason.len() <= MAX_TEXT
        && std::str::from_utf8(reason).is_ok()
}

/// One PASSWORD-ALGORITHM entry at the start of `value`: its length (4 + parameters).
fn password_algorithm_len(value: &[u8]) -> Option<usize> {
    let [_, _, high, low, ..] = value else {
        return None;
    };
    let len = 4 + usize::from(u16::from_be_bytes([*high, *low]));
    (value.len() >= len).then_some(len)
}

/// PASSWORD-ALGORITHMS: entries, each but the first after padding the one before to
/// four bytes; padding that ends the value is refused, as `stun-rs` does.
fn is_password_algorithms(value: &[u8]) -> bool {
    let mut previous: usize = 0;
    let mut total = 0;
    while total < value.len() {
        total += previous.next_multiple_of(4) - previous;
        let Some(len) = value.get(total..).and_then(password_algorithm_len) else {
            return false;
        };
        total += len;
        previous = len;
    }
    true
}

/// REALM and NONCE: a sequence of `qdtext` or `quoted-pair` (RFC 3261 §25.1) without
/// the surrounding double quotes and whitespace.
fn is_unquoted_quoted_string(text: &str) -> bool {
    let removable = |c: char| matches!(c, '\r' | '\n' | ' ' | '\t' | '"');
    match (text.chars().next(), text.chars().next_back()) {
        (None, _) | (_, None) => true,
        (Some(first), Some(last)) => {
            !removable(first) && !removable(last) && QuotedText::new(text).matches()
        }
    }
}

/// The `quoted_text` rule of the `quoted-string-parser` grammar that `stun-rs` uses:
/// `(qdtext | quoted_pair)*` over characters, where `utf8_nonascii` is read as
/// characters U+00C0–U+00FD followed by continuation characters U+0080–U+00BF.
struct QuotedText {
    chars: Vec<char>,
}

impl QuotedText {
    fn new(text: &str) -> Self {
        Self {
            chars: text.chars().collect(),
        }
    }

    fn matches(&self) -> bool {
        let mut at = 0;
        while at < self.chars.len() {
            match self.qdtext(at).or_else(|| self.quoted_pair(at)) {
                Some(next) => at = next,
                None => return false,
            }
        }
        true
    }

    fn is_wsp(&self, at: usize) -> bool {
        matches!(self.chars.get(at), Some(' ' | '\t'))
    }

    fn qdtext(&self, at: usize) -> Option<usize> {
        if let Some(next) = self.lws(at) {
            return Some(next);
        }
        match self.chars.get(at)? {
            '!' | '\u{23}'..='\u{5B}' | '\u{5D}'..='\u{7E}' => Some(at + 1),
            _ => self.utf8_nonascii(at),
        }
    }

    /// `((wsp)* CR LF)* (wsp)+`
    fn lws(&self, mut at: usize) -> Option<usize> {
        loop {
            let mut next = at;
            while self.is_wsp(next) {
                next += 1;
            }
            if self.chars.get(next) == Some(&'\r') && self.chars.get(next + 1) == Some(&'\n') {
                at = next + 2;
            } else {
                break;
            }
        }
        let start = at;
        while self.is_wsp(at) {
            at += 1;
        }
        (at > start).then_some(at)
    }

    fn utf8_nonascii(&self, at: usize) -> Option<usize> {
        let continuations = match self.chars.get(at)? {
            '\u{C0}'..='\u{DF}' => 1,
            '\u{E0}'..='\u{EF}' => 2,
            '\u{F0}'..='\u{F7}' => 3,
            '\u{F8}'..='\u{FB}' => 4,
            '\u{FC}'..='\u{FD}' => 5,
            _ => return None,
        };
        let all = (1..=continuations)
            .all(|k| matches!(self.chars.get(at + k), Some('\u{80}'..='\u{BF}')));
        all.then_some(at + 1 + continuations)
    }

    fn quoted_pair(&self, at: usize) -> Option<usize> {
        if self.chars.get(at) != Some(&'\\') {
            return None;
        }
        match self.chars.get(at + 1)? {
            '\u{00}'..='\u{09}' | '\u{0B}'..='\u{0C}' | '\u{0E}'..='\u{7F}' => Some(at + 2),
            _ => None,
        }
    }
}
