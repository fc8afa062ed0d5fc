//! A value for each of a service's two slots: what a target runs in them, their weights, their
//! probes. Read as a map from slot to value, in slot order, as a `BTreeMap<Slot, V>` was; held
//! inline, two places, where the tree allocated a node of eleven for the one or two slots a
//! service has (a kilobyte a service for each copy of what is live, with 1,000 services a tenth
//! of the agent's heap).

use std::fmt;

use serde::ser::SerializeMap;

use super::workload::Slot;

/// Each slot in order, to lend out as map keys.
static ORDER: [Slot; 2] = [Slot::Blue, Slot::Green];

/// At most one value per slot.
#[derive(Clone, PartialEq, Eq)]
pub struct Slots<V>([Option<V>; 2]);

fn index(slot: Slot) -> usize {
    match slot {
        Slot::Blue => 0,
        Slot::Green => 1,
    }
}

impl<V> Slots<V> {
    /// No slot holds anything.
    pub const fn new() -> Self {
        Slots([None, None])
    }

    /// The value of `slot`.
    pub fn get(&self, slot: &Slot) -> Option<&V> {
        self.0[index(*slot)].as_ref()
    }

    /// The value of `slot`, to change.
    pub fn get_mut(&mut self, slot: &Slot) -> Option<&mut V> {
        self.0[index(*slot)].as_mut()
    }

    /// Whether `slot` holds a value.
    pub fn contains_key(&self, slot: &Slot) -> bool {
        self.0[index(*slot)].is_some()
    }

    /// Sets the value of `slot`, returning the one it replaced.
    pub fn insert(&mut self, slot: Slot, value: V) -> Option<V> {
        self.0[index(slot)].replace(value)
    }

    /// Empties `slot`, returning its value.
    pub fn remove(&mut self, slot: &Slot) -> Option<V> {
        self.0[index(*slot)].take()
    }

    /// The value of `slot`, made with `make` when it has none.
    pub fn or_insert_with(&mut self, slot: Slot, make: impl FnOnce() -> V) -> &mut V {
        self.0[index(slot)].get_or_insert_with(make)
    }

    /// How many slots hold a value.
    pub fn len(&self) -> usize {
        self.0.iter().filter(|v| v.is_some()).count()
    }

    /// Whether no slot holds a value.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The slots holding a value and their values, in slot order.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter(ORDER.iter().zip(&self.0))
    }

    /// The slots holding a value, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Slot> {
        self.iter().map(|(slot, _)| slot)
    }

    /// The values, in slot order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.0.iter().flatten()
    }
}

/// The value of a slot, which must hold one, as a map's index is.
impl<V> std::ops::Index<&Slot> for Slots<V> {
    type Output = V;

    fn index(&self, slot: &Slot) -> &V {
        self.get(slot)
            .unwrap_or_else(|| panic!("the {} slot holds nothing", slot.name()))
    }
}

impl<V> Default for Slots<V> {
    fn default() -> Self {
        Slots::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for Slots<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> FromIterator<(Slot, V)> for Slots<V> {
    fn from_iter<I: IntoIterator<Item = (Slot, V)>>(pairs: I) -> Self {
        let mut slots = Slots::new();
        slots.extend(pairs);
        slots
    }
}

impl<V> Extend<(Slot, V)> for Slots<V> {
    fn extend<I: IntoIterator<Item = (Slot, V)>>(&mut self, pairs: I) {
        for (slot, value) in pairs {
            self.insert(slot, value);
        }
    }
}

impl<V, const N: usize> From<[(Slot, V); N]> for Slots<V> {
    fn from(pairs: [(Slot, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<V> IntoIterator for Slots<V> {
    type Item = (Slot, V);
    type IntoIter = std::iter::FilterMap<
        std::iter::Zip<std::array::IntoIter<Slot, 2>, std::array::IntoIter<Option<V>, 2>>,
        fn((Slot, Option<V>)) -> Option<(Slot, V)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        ORDER.into_iter().zip(self.0).filter_map(|(slot, v)| Some((slot, v?)))
    }
}

impl<'a, V> IntoIterator for &'a Slots<V> {
    type Item = (&'a Slot, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The slots holding a value and their values, in slot order.
pub struct Iter<'a, V>(std::iter::Zip<std::slice::Iter<'a, Slot>, std::slice::Iter<'a, Option<V>>>);

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Slot, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.by_ref().find_map(|(slot, v)| Some((slot, v.as_ref()?)))
    }
}

impl<V> DoubleEndedIterator for Iter<'_, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.by_ref().rev().find_map(|(slot, v)| Some((slot, v.as_ref()?)))
    }
}

/// Written as the map it stands for: `{"blue": …, "green": …}`, empty slots left out.
impl<V: serde::Serialize> serde::Serialize for Slots<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (slot, value) in self.iter() {
            map.serialize_entry(slot, value)?;
        }
        map.end()
    }
}

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Slots<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = std::collections::BTreeMap::<Slot, V>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_map_it_replaced() {
        let mut slots: Slots<u32> = Slots::new();
        assert!(slots.is_empty());
        assert_eq!(slots.insert(Slot::Green, 2), None);
        assert_eq!(slots.insert(Slot::Blue, 1), None);
        assert_eq!(slots.insert(Slot::Green, 3), Some(2));
        let tree: std::collections::BTreeMap<Slot, u32> = [(Slot::Green, 3), (Slot::Blue, 1)].into();
        assert!(slots.iter().eq(tree.iter()));
        assert_eq!(slots.len(), 2);
        assert_eq!(
            serde_json::to_string(&slots).unwrap(),
            serde_json::to_string(&tree).unwrap()
        );
        assert_eq!(format!("{slots:?}"), format!("{tree:?}"));
        let back: Slots<u32> = serde_json::from_str(r#"{"green": 3, "blue": 1}"#).unwrap();
        assert_eq!(back, slots);
        assert_eq!(slots.remove(&Slot::Blue), Some(1));
        assert_eq!(slots.remove(&Slot::Blue), None);
        assert_eq!(slots.into_iter().collect::<Vec<_>>(), vec![(Slot::Green, 3)]);
    }
}
