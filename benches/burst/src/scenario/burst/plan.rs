//! The run's layout, decided before any connection and the same for every thread:
//! tenants and their sizes, team rooms, meetings and their participants, the arrival
//! order. Sans-IO and deterministic given the flags and the seed.
//!
//! Clients are numbered tenant by tenant; a tenant's clients fill its rooms in order,
//! and a meeting takes `participants` consecutive clients of one tenant (the first is
//! the host), so that everything a client belongs to is a lookup by its number.

use super::rng::Rng;

/// Marks a client in no meeting.
const NO_MEETING: u32 = u32::MAX;

/// One tenant.
#[derive(Clone, Debug)]
pub struct TenantPlan {
    /// The `tenant` claim.
    pub name: String,
    /// Its first client.
    pub first: usize,
    /// How many clients it has.
    pub clients: usize,
}

/// One team room.
#[derive(Clone, Debug)]
pub struct RoomPlan {
    /// Its tenant.
    pub tenant: usize,
    /// The room id as a JSON string, quotes included, ready to splice into frames.
    pub json: String,
    /// Its first member.
    pub first: usize,
    /// How many members it has.
    pub members: usize,
}

/// One meeting.
#[derive(Clone, Debug)]
pub struct MeetingPlan {
    /// The host, first of `participants` consecutive clients of one tenant.
    pub host: usize,
    /// The `key` of `meeting.create`, which makes a retried create idempotent.
    pub key: String,
}

/// What shapes the layout (validated flags).
#[derive(Clone, Debug)]
pub struct Shape {
    /// Clients.
    pub clients: usize,
    /// Tenants.
    pub tenants: usize,
    /// Zipf exponent of the tenant sizes.
    pub skew: f64,
    /// Prefix of the tenant names.
    pub tenant_prefix: String,
    /// Members per room.
    pub room_size: usize,
    /// Meetings.
    pub meetings: usize,
    /// Participants per meeting.
    pub participants: usize,
    /// Makes room names and meeting keys unique to this run.
    pub run_tag: String,
    /// Seed of the arrival order.
    pub seed: u64,
}

/// The layout.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Tenants, largest first.
    pub tenants: Vec<TenantPlan>,
    /// Rooms, tenant by tenant.
    pub rooms: Vec<RoomPlan>,
    /// Meetings.
    pub meetings: Vec<MeetingPlan>,
    /// Participants per meeting.
    pub participants: usize,
    /// Each client's room.
    room_of: Vec<u32>,
    /// Each client's meeting, or [`NO_MEETING`].
    meeting_of: Vec<u32>,
    /// Each client's place in the arrival order.
    rank: Vec<u32>,
}

/// Tenant sizes summing to `clients`, each at least 1, shares following a Zipf law of
/// exponent `skew` (largest remainder, so the sizes never increase).
///
/// # Errors
/// When there are more tenants than clients, or the exponent is not a finite
/// non-negative number.
pub fn tenant_sizes(clients: usize, tenants: usize, skew: f64) -> Result<Vec<usize>, String> {
    if tenants == 0 || tenants > clients {
        return Err(format!(
            "--tenants {tenants} needs between 1 and --clients ({clients}) tenants"
        ));
    }
    if !skew.is_finite() || skew < 0.0 {
        return Err("--tenant-skew must be a finite number >= 0".into());
    }
    let weights: Vec<f64> = (0..tenants).map(|k| (k as f64 + 1.0).powf(-skew)).collect();
    let total: f64 = weights.iter().sum();
    let rest = clients - tenants;
    let quotas: Vec<f64> = weights.iter().map(|w| rest as f64 * w / total).collect();
    let mut sizes: Vec<usize> = quotas.iter().map(|q| 1 + q.floor() as usize).collect();
    let mut left = clients - sizes.iter().sum::<usize>();
    let mut by_fraction: Vec<usize> = (0..tenants).collect();
    by_fraction.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &k in by_fraction.iter().cycle().take(tenants * 2) {
        if left == 0 {
            break;
        }
        sizes[k] += 1;
        left -= 1;
    }
    debug_assert_eq!(left, 0);
    Ok(sizes)
}

impl Plan {
    /// Lays the run out.
    ///
    /// # Errors
    /// When the tenants or the meetings do not fit the clients.
    pub fn new(shape: &Shape) -> Result<Self, String> {
        let sizes = tenant_sizes(shape.clients, shape.tenants, shape.skew)?;
        let mut tenants = Vec::with_capacity(sizes.len());
        let mut rooms = Vec::new();
        let mut room_of = Vec::with_capacity(shape.clients);
        let mut first = 0;
        for (t, &size) in sizes.iter().enumerate() {
            tenants.push(TenantPlan {
                name: format!("{}{t}", shape.tenant_prefix),
                first,
                clients: size,
            });
            for (k, start) in (0..size).step_by(shape.room_size).enumerate() {
                let members = shape.room_size.min(size - start);
                room_of.extend(std::iter::repeat_n(rooms.len() as u32, members));
                rooms.push(RoomPlan {
                    tenant: t,
                    json: format!("\"team-{}-{k}\"", shape.run_tag),
                    first: first + start,
                    members,
                });
            }
            first += size;
        }
        let meetings = place_meetings(shape, &tenants)?;
        let mut meeting_of = vec![NO_MEETING; shape.clients];
        for (m, plan) in meetings.iter().enumerate() {
            meeting_of[plan.host..plan.host + shape.participants].fill(m as u32);
        }
        let mut order: Vec<u32> = (0..shape.clients as u32).collect();
        Rng::new(shape.seed).shuffle(&mut order);
        let mut rank = vec![0; shape.clients];
        for (place, &client) in order.iter().enumerate() {
            rank[client as usize] = place as u32;
        }
        Ok(Self {
            tenants,
            rooms,
            meetings,
            participants: shape.participants,
            room_of,
            meeting_of,
            rank,
        })
    }

    /// Clients in all.
    pub fn clients(&self) -> usize {
        self.room_of.len()
    }

    /// Client `i`'s room.
    pub fn room_of(&self, i: usize) -> usize {
        self.room_of[i] as usize
    }

    /// Client `i`'s tenant.
    pub fn tenant_of(&self, i: usize) -> usize {
        self.rooms[self.room_of(i)].tenant
    }

    /// Client `i`'s meeting and its seat number there (0 = the host), if any.
    pub fn meeting_of(&self, i: usize) -> Option<(usize, usize)> {
        let m = self.meeting_of[i];
        (m != NO_MEETING).then(|| (m as usize, i - self.meetings[m as usize].host))
    }

    /// Client `i`'s place in the arrival order (`0..clients`).
    pub fn rank(&self, i: usize) -> usize {
        self.rank[i] as usize
    }

    /// Signals from seat `from` to seat `to` of meeting `m`: their counter's index.
    pub fn pair(&self, m: usize, from: usize, to: usize) -> usize {
        (m * self.participants + from) * self.participants + to
    }

    /// Counters needed by [`Plan::pair`].
    pub fn pairs(&self) -> usize {
        self.meetings.len() * self.participants * self.participants
    }
}

/// Picks `meetings` blocks of `participants` consecutive clients within tenants,
/// spread evenly over all the blocks that fit, so that big tenants hold more meetings.
fn place_meetings(shape: &Shape, tenants: &[TenantPlan]) -> Result<Vec<MeetingPlan>, String> {
    let p = shape.participants;
    let blocks: Vec<usize> = tenants
        .iter()
        .flat_map(|t| (0..t.clients / p).map(move |b| t.first + b * p))
        .collect();
    if shape.meetings > blocks.len() {
        return Err(format!(
            "--meetings {} of --participants {p} do not fit: a meeting's participants share \
             a tenant, and the tenants hold {} such groups (lower --meetings or --participants)",
            shape.meetings,
            blocks.len()
        ));
    }
    Ok((0..shape.meetings)
        .map(|k| MeetingPlan {
            host: blocks[k * blocks.len() / shape.meetings],
            key: format!("standup-{}-{k}", shape.run_tag),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(clients: usize, tenants: usize, meetings: usize) -> Shape {
        Shape {
            clients,
            tenants,
            skew: 1.0,
            tenant_prefix: "t".into(),
            room_size: 50,
            meetings,
            participants: 5,
            run_tag: "r1".into(),
            seed: 9,
        }
    }

    #[test]
    fn tenant_sizes_follow_the_skew_and_add_up() {
        let sizes = tenant_sizes(2000, 10, 1.0).unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 2000);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        // Zipf: the largest holds 1/H(10) of the clients, the second half of that.
        assert!((675..=685).contains(&sizes[0]), "{sizes:?}");
        assert!((338..=343).contains(&sizes[1]), "{sizes:?}");
        assert_eq!(tenant_sizes(10, 3, 0.0).unwrap(), [4, 3, 3]);
        assert_eq!(tenant_sizes(5, 1, 2.0).unwrap(), [5]);
        let steep = tenant_sizes(100, 10, 3.0).unwrap();
        assert_eq!(steep.iter().sum::<usize>(), 100);
        assert!(steep.iter().all(|&s| s >= 1), "{steep:?}");
        assert!(tenant_sizes(3, 4, 1.0).is_err());
        assert!(tenant_sizes(3, 1, -1.0).is_err());
        assert!(tenant_sizes(3, 1, f64::NAN).is_err());
    }

    #[test]
    fn rooms_meetings_and_lookups() {
        let plan = Plan::new(&shape(2000, 10, 20)).unwrap();
        assert_eq!(plan.clients(), 2000);
        for (t, tenant) in plan.tenants.iter().enumerate() {
            assert_eq!(tenant.name, format!("t{t}"));
            for i in tenant.first..tenant.first + tenant.clients {
                assert_eq!(plan.tenant_of(i), t);
            }
        }
        for (r, room) in plan.rooms.iter().enumerate() {
            assert!(room.members <= 50 && room.members > 0);
            assert_eq!(plan.room_of(room.first), r);
            assert_eq!(plan.room_of(room.first + room.members - 1), r);
        }
        assert_eq!(plan.rooms[0].json, "\"team-r1-0\"");
        let mut in_meetings = 0;
        for (m, meeting) in plan.meetings.iter().enumerate() {
            let tenant = plan.tenant_of(meeting.host);
            for slot in 0..5 {
                assert_eq!(plan.meeting_of(meeting.host + slot), Some((m, slot)));
                assert_eq!(plan.tenant_of(meeting.host + slot), tenant);
                in_meetings += 1;
            }
        }
        assert_eq!(in_meetings, 100);
        assert_eq!(
            plan.meetings
                .iter()
                .filter(|m| plan.tenant_of(m.host) == 0)
                .count(),
            7
        );
        let mut ranks: Vec<usize> = (0..2000).map(|i| plan.rank(i)).collect();
        assert_ne!(
            ranks[..10],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            "arrivals are shuffled"
        );
        ranks.sort_unstable();
        assert_eq!(ranks, (0..2000).collect::<Vec<_>>());
        assert_eq!(plan.pairs(), 20 * 25);
        assert_eq!(plan.pair(19, 4, 4), 20 * 25 - 1);
    }

    #[test]
    fn meetings_that_do_not_fit_are_refused() {
        // 10 tenants of 1 client each: no group of 5 fits in any of them.
        let err = Plan::new(&shape(10, 10, 1)).unwrap_err();
        assert!(err.contains("do not fit"), "{err}");
        assert!(Plan::new(&shape(10, 1, 2)).is_ok());
        assert!(Plan::new(&shape(10, 1, 3)).is_err());
    }
}
