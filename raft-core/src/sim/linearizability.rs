//! A linearizability checker in the style of Porcupine: the Wing-Gong
//! search with Lowe's memoization of (linearized set, state) pairs, run
//! separately on each partition of the history (P-compositionality: a
//! history of a key-value store is linearizable iff each key's sub-history
//! is).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification of an object.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash + Debug;
    /// An operation's input.
    type Input: Debug;
    /// An operation's output.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`; returns the next state if the object may
    /// answer `output`, `None` if that answer is impossible in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Which independent sub-object an operation touches (a key); the
    /// history is checked one partition at a time.
    fn partition(&self, _input: &Self::Input) -> u64 {
        0
    }
}

/// One completed operation of a concurrent history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who issued it (for reporting).
    pub client: u64,
    /// When it was invoked.
    pub call: u64,
    /// When its response arrived; at least `call`.
    pub ret: u64,
    /// What was asked.
    pub input: I,
    /// What was answered.
    pub output: O,
}

/// An operation of model `M`'s history.
pub type OperationOf<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// A history that has no linearization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLinearizable {
    /// The partition (key) whose sub-history fails.
    pub partition: u64,
    /// How many operations that sub-history has.
    pub operations: usize,
    /// The longest prefix of operations (indices into the sub-history, in
    /// linearization order) the search managed to linearize.
    pub longest_prefix: Vec<usize>,
}

/// Checks that `history` is linearizable with respect to `model`.
pub fn check<M: Model>(model: &M, history: &[OperationOf<M>]) -> Result<(), NotLinearizable> {
    let mut partitions: BTreeMap<u64, Vec<&OperationOf<M>>> = BTreeMap::new();
    for op in history {
        partitions
            .entry(model.partition(&op.input))
            .or_default()
            .push(op);
    }
    for (key, ops) in partitions {
        check_partition(model, &ops).map_err(|longest_prefix| NotLinearizable {
            partition: key,
            operations: ops.len(),
            longest_prefix,
        })?;
    }
    Ok(())
}

const NIL: usize = usize::MAX;

/// The history as a doubly linked list of call and return events, from
/// which linearized operations are lifted out and put back on backtrack.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For a call event, its return event; for a return event, `NIL`.
    matching: Vec<usize>,
    /// The operation an event belongs to.
    op: Vec<usize>,
    head: usize,
}

impl Events {
    fn new<I, O>(ops: &[&Operation<I, O>]) -> Self {
        // Calls sort before returns at equal times: touching operations
        // count as concurrent, the permissive reading.
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, 0, i));
            order.push((op.ret.max(op.call), 1, i));
        }
        order.sort_unstable();
        let n = order.len();
        let head = n;
        let mut events = Events {
            next: vec![NIL; n + 1],
            prev: vec![NIL; n + 1],
            matching: vec![NIL; n],
            op: vec![0; n],
            head,
        };
        let mut call_event = vec![NIL; ops.len()];
        let mut last = head;
        for (e, (_, kind, op)) in order.iter().enumerate() {
            events.op[e] = *op;
            if *kind == 0 {
                call_event[*op] = e;
            } else if let Some(c) = call_event.get(*op) {
                events.matching[*c] = e;
            }
            events.next[last] = e;
            events.prev[e] = last;
            last = e;
        }
        events
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.matching[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.matching[call]);
        self.relink(call);
    }
}

/// Wing & Gong's search with Lowe's cache. On failure returns the longest
/// linearized prefix found.
fn check_partition<M: Model>(model: &M, ops: &[&OperationOf<M>]) -> Result<(), Vec<usize>> {
    let mut events = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut state = model.init();
    let mut entry = events.next[events.head];
    while events.next[events.head] != NIL {
        if events.matching[entry] != NIL {
            // A call: try to linearize its operation here.
            let op = ops[events.op[entry]];
            let id = events.op[entry];
            let advanced = model.step(&state, &op.input, &op.output).and_then(|next| {
                let mut set = linearized.clone();
                set[id / 64] |= 1 << (id % 64);
                cache
                    .insert((set.clone(), next.clone()))
                    .then_some((set, next))
            });
            match advanced {
                Some((set, next)) => {
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    linearized = set;
                    events.lift(entry);
                    entry = events.next[events.head];
                    if stack.len() > longest.len() {
                        longest = stack.iter().map(|(e, _)| events.op[*e]).collect();
                    }
                }
                None => entry = events.next[entry],
            }
        } else {
            // A return whose operation is not linearized yet: backtrack.
            let Some((call, previous)) = stack.pop() else {
                return Err(longest);
            };
            let id = events.op[call];
            linearized[id / 64] &= !(1 << (id % 64));
            state = previous;
            events.unlift(call);
            entry = events.next[call];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: `Some(v)` writes, `None` reads.
    struct Register;

    impl Model for Register {
        type State = u64;
        type Input = Option<u64>;
        type Output = u64;
        fn init(&self) -> u64 {
            0
        }
        fn step(&self, state: &u64, input: &Option<u64>, output: &u64) -> Option<u64> {
            match input {
                Some(v) => Some(*v),
                None => (output == state).then_some(*state),
            }
        }
    }

    fn op(call: u64, ret: u64, input: Option<u64>, output: u64) -> Operation<Option<u64>, u64> {
        Operation {
            client: 0,
            call,
            ret,
            input,
            output,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(0, 1, Some(1), 0),
            op(2, 3, None, 1),
            op(4, 5, Some(2), 0),
            op(6, 7, None, 2),
        ];
        assert!(check(&Register, &h).is_ok());
    }

    #[test]
    fn stale_read_after_write_completed_is_not() {
        // The write of 1 finished before the read began, yet the read saw 0.
        let h = [op(0, 1, Some(1), 0), op(2, 3, None, 0)];
        let err = check(&Register, &h).unwrap_err();
        assert_eq!(err.operations, 2);
        assert_eq!(err.longest_prefix, vec![0]);
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        // Write 1 overlaps both reads; one sees 0, the other 1 — fine as
        // long as the read of 1 does not precede the read of 0.
        let ok = [op(0, 10, Some(1), 0), op(1, 2, None, 0), op(3, 4, None, 1)];
        assert!(check(&Register, &ok).is_ok());
        let bad = [op(0, 10, Some(1), 0), op(1, 2, None, 1), op(3, 4, None, 0)];
        assert!(
            check(&Register, &bad).is_err(),
            "a value cannot be unwritten"
        );
    }

    #[test]
    fn figure_from_herlihy_wing_queue_like_register_case() {
        // Two overlapping writes, then reads that disagree on the winner:
        // after both writes end, reads must agree.
        let bad = [
            op(0, 5, Some(1), 0),
            op(0, 5, Some(2), 0),
            op(6, 7, None, 1),
            op(8, 9, None, 2),
        ];
        assert!(check(&Register, &bad).is_err());
        let ok = [
            op(0, 5, Some(1), 0),
            op(0, 5, Some(2), 0),
            op(6, 7, None, 1),
            op(8, 9, None, 1),
        ];
        assert!(check(&Register, &ok).is_ok());
    }

    struct Keyed;
    impl Model for Keyed {
        type State = u64;
        type Input = (u64, Option<u64>);
        type Output = u64;
        fn init(&self) -> u64 {
            0
        }
        fn step(&self, s: &u64, input: &(u64, Option<u64>), out: &u64) -> Option<u64> {
            Register.step(s, &input.1, out)
        }
        fn partition(&self, input: &(u64, Option<u64>)) -> u64 {
            input.0
        }
    }

    #[test]
    fn partitions_are_checked_independently() {
        let op = |call, ret, key, input, output| Operation {
            client: 0,
            call,
            ret,
            input: (key, input),
            output,
        };
        // Key 1 is fine, key 2 reads a value never written.
        let h = [
            op(0, 1, 1, Some(5), 0),
            op(2, 3, 1, None, 5),
            op(0, 1, 2, None, 9),
        ];
        assert_eq!(check(&Keyed, &h).unwrap_err().partition, 2);
        // Long histories with overlapping writes stay fast (memoization).
        let mut long = Vec::new();
        for i in 0..1000u64 {
            let key = i % 3;
            long.push(op(4 * i, 4 * i + 5, key, Some(i), 0));
            long.push(op(4 * i + 6, 4 * i + 7, key, None, i));
        }
        assert!(check(&Keyed, &long).is_ok());
        // The same history with one read off by one is caught.
        long[1001].output += 1;
        assert!(check(&Keyed, &long).is_err());
    }
}
