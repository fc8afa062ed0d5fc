//! The members of a document's map, in the order written. Nearly every map of a repository is
//! small (a port, a health check, a service's few fields), so the members are a list searched
//! in order, with no hash table beside each: a map costs its entries and nothing more. A long
//! map (an environment's services, thousands of them) gets an index by key once it passes
//! [`INDEXED`] members, so that looking a service up stays constant-time.

use std::collections::HashMap;

use super::node::{Member, Text};

/// Past how many members a map keeps an index by key.
const INDEXED: usize = 16;

/// A map's members: keys in the order written, each once.
#[derive(Clone, Default)]
pub struct Members {
    entries: Vec<(Text, Member)>,
    index: Option<Box<Index>>,
}

/// Where each key of a long map is among its members.
type Index = HashMap<Text, usize, foldhash::fast::RandomState>;

impl Members {
    /// The members `entries`, whose keys are known to be each written once (the parser refuses
    /// a duplicate as it comes).
    pub fn from_unique(entries: Vec<(Text, Member)>) -> Self {
        let mut members = Members { entries, index: None };
        members.reindex();
        debug_assert!(members.keys().enumerate().all(|(i, k)| members.position(k) == Some(i)));
        members
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `key` is among the members.
    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    /// The member of `key`.
    pub fn get(&self, key: &str) -> Option<&Member> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The member of `key`, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Member> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` is a member.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets the member of `key`: in its place when it is one (the member it replaces is
    /// returned), else last.
    pub fn insert(&mut self, key: Text, member: Member) -> Option<Member> {
        if let Some(i) = self.position(&key) {
            return Some(std::mem::replace(&mut self.entries[i].1, member));
        }
        self.push(key, member);
        None
    }

    /// Adds `key` last, unless it is a member already.
    pub fn insert_if_absent(&mut self, key: Text, member: Member) {
        if !self.contains_key(&key) {
            self.push(key, member);
        }
    }

    /// Adds `key`, known not to be a member, last.
    fn push(&mut self, key: Text, member: Member) {
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.entries.len());
        }
        self.entries.push((key, member));
        if self.index.is_none() && self.entries.len() > INDEXED {
            self.reindex();
        }
    }

    /// Removes the member of `key`, keeping the others in order.
    pub fn shift_remove(&mut self, key: &str) -> Option<Member> {
        let i = self.position(key)?;
        let (key, member) = self.entries.remove(i);
        if self.entries.len() <= INDEXED {
            self.index = None;
        } else if let Some(index) = &mut self.index {
            index.remove(&key);
            for (key, _) in &self.entries[i..] {
                if let Some(position) = index.get_mut(key) {
                    *position -= 1;
                }
            }
        }
        Some(member)
    }

    /// Keeps the members `keep` says to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Text, &mut Member) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, m)| keep(k, m));
        if self.entries.len() != before {
            self.reindex();
        }
    }

    /// Gives back the room the members do not use.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Text> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The members, in order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Member> + ExactSizeIterator {
        self.entries.iter().map(|(_, m)| m)
    }

    /// The members, in order, to change.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Member> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, m)| m)
    }

    /// The keys and members, in order.
    pub fn iter(&self) -> Iter<'_> {
        self.entries.iter().map(|(k, m)| (k, m))
    }

    /// The keys and members, in order, the members to change.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&Text, &mut Member)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, m)| (&*k, m))
    }

    /// Builds the index by key when the map is long, drops it when it is short.
    fn reindex(&mut self) {
        self.index = (self.entries.len() > INDEXED).then(|| {
            let mut index = Index::with_capacity_and_hasher(self.entries.len(), Default::default());
            for (i, (key, _)) in self.entries.iter().enumerate() {
                index.insert(key.clone(), i);
            }
            Box::new(index)
        });
    }
}

/// The keys and members of a map, in order.
pub type Iter<'a> =
    std::iter::Map<std::slice::Iter<'a, (Text, Member)>, fn(&'a (Text, Member)) -> (&'a Text, &'a Member)>;

impl<'a> IntoIterator for &'a Members {
    type Item = (&'a Text, &'a Member);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for Members {
    type Item = (Text, Member);
    type IntoIter = std::vec::IntoIter<(Text, Member)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl FromIterator<(Text, Member)> for Members {
    /// The members `entries`; a key written twice keeps its first place and its last member.
    fn from_iter<I: IntoIterator<Item = (Text, Member)>>(entries: I) -> Self {
        let mut members = Members::default();
        members.extend(entries);
        members
    }
}

/// Adds each entry as `insert` does, room made for them first.
impl Extend<(Text, Member)> for Members {
    fn extend<I: IntoIterator<Item = (Text, Member)>>(&mut self, entries: I) {
        let entries = entries.into_iter();
        self.entries.reserve(entries.size_hint().0);
        for (key, member) in entries {
            self.insert(key, member);
        }
    }
}

/// The member of a key known to be one.
impl std::ops::Index<&str> for Members {
    type Output = Member;

    fn index(&self, key: &str) -> &Member {
        self.get(key).expect("the key is a member")
    }
}

/// Two maps are equal when they have the same keys with equal members, in any order.
impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, m)| other.get(k) == Some(m))
    }
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::node::{Kind, Node, Origin};

    fn member(n: i64) -> Member {
        let at = Origin::file(&std::sync::Arc::from("f.yaml"));
        Member {
            key_at: at.clone(),
            value: Node::new(Kind::Int(n), at),
        }
    }

    fn value(members: &Members, key: &str) -> Option<i64> {
        members.get(key).map(|m| match m.value.kind {
            Kind::Int(n) => n,
            _ => unreachable!(),
        })
    }

    /// Every key is found where it is.
    fn consistent(members: &Members) {
        for (i, key) in members.keys().enumerate() {
            assert_eq!(members.position(key), Some(i), "{key}");
        }
        assert_eq!(members.index.is_some(), members.len() > INDEXED);
    }

    /// Short and long, a map keeps its order, finds its keys, and stays indexed as it changes.
    #[test]
    fn members_keep_their_order_and_are_found_short_and_long() {
        for size in [3usize, INDEXED, INDEXED + 1, INDEXED + 2, 100] {
            let mut members: Members = (0..size)
                .map(|i| (Text::from(format!("k{i}")), member(i as i64)))
                .collect();
            assert_eq!(members.len(), size);
            assert_eq!(members.index.is_some(), size > INDEXED);
            assert_eq!(value(&members, &format!("k{}", size - 1)), Some(size as i64 - 1));
            assert_eq!(
                members.insert("k0".into(), member(-1)).map(|m| m.value.kind),
                Some(Kind::Int(0))
            );
            assert_eq!(members.keys().next().map(Text::as_str), Some("k0"));
            consistent(&members);
            assert_eq!(members.shift_remove("k1").map(|m| m.value.kind), Some(Kind::Int(1)));
            consistent(&members);
            assert_eq!(value(&members, "k1"), None);
            assert_eq!(value(&members, &format!("k{}", size - 1)), Some(size as i64 - 1));
            members.insert_if_absent("k2".into(), member(-2));
            members.insert_if_absent("new".into(), member(7));
            assert_eq!((value(&members, "k2"), value(&members, "new")), (Some(2), Some(7)));
            assert_eq!(members.keys().last().map(Text::as_str), Some("new"));
            consistent(&members);
            members.retain(|k, _| k != "k2");
            consistent(&members);
            members.retain(|_, _| true);
            consistent(&members);
            assert_eq!((value(&members, "k2"), value(&members, "new")), (None, Some(7)));
            let reversed: Members = members.clone().into_iter().rev().collect();
            assert_eq!(reversed, members, "equal in any order");
        }
    }
}
