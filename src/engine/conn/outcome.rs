//! The observer's outcome: its state at the end turned into the report model.

use std::time::Instant;

use super::Conn;
use crate::engine::predict::{self, KernelTcp};
use crate::report::{Closer, DetectedFrom, Report, SCHEMA, Verdict, micros};
use crate::vocab::CloseMode;

impl Conn {
    /// The finished report.
    pub fn into_report(mut self, kernel: KernelTcp) -> Report {
        let end = Instant::now();
        let verdict = self.verdict().unwrap_or(Verdict::Open);
        let closer = match (self.action, self.peer_action) {
            (Some(_), _) => Some(Closer::Local),
            (None, Some(_)) => Some(Closer::Peer),
            // An ending this side detected was the peer's doing, seen or silent.
            (None, None)
                if matches!(
                    verdict,
                    Verdict::Fin | Verdict::Rst | Verdict::Heartbeat | Verdict::Timeout
                ) =>
            {
                Some(Closer::Peer)
            }
            _ => None,
        };
        let acted = match closer {
            Some(Closer::Local) => self.action,
            Some(Closer::Peer) => self.peer_action,
            None => None,
        };
        // Detection is measured for what the peer did; a local fin/rst has none.
        let observed =
            closer == Some(Closer::Peer) || self.action.is_some_and(|(_, m)| m == CloseMode::Half);
        let detected_at = self
            .detected_at
            .filter(|_| observed && verdict != Verdict::Open);
        // Detection is timed from a moment this side knows: the closer's action
        // (both ends in this process), else the arrival of the peer's FIN or RST
        // (captured); a silent ending, which no packet announces, counts from the
        // last sign of life. A FIN or RST whose arrival nobody timed has no
        // latency: the time since the last data is the peer's idle time.
        let (reference, from) = match (self.peer_action, verdict, self.peer_end_packet) {
            (Some((at, _)), _, _) => (Some(at), DetectedFrom::Close),
            (None, Verdict::Fin | Verdict::Rst, Some(at)) => (Some(at), DetectedFrom::Packet),
            (None, Verdict::Fin | Verdict::Rst, None) => (None, DetectedFrom::Packet),
            (None, _, _) => (Some(self.last_data), DetectedFrom::LastActivity),
        };
        let detected = detected_at
            .zip(reference)
            .map(|(at, from)| micros(at.saturating_duration_since(from)));
        let peer_idle = detected_at.map(|at| micros(at.saturating_duration_since(self.last_data)));
        let anchor = self.peer_action.map_or(self.last_data, |(at, _)| at);
        // A prediction is for a silent ending that a mechanism caught. For `open`
        // nothing was caught, and the running estimate (re-anchored at each answered
        // probe) names no moment that happened: leave it out.
        let silent = !matches!(verdict, Verdict::Fin | Verdict::Rst | Verdict::Open)
            && self.action.is_none();
        let prediction = silent
            .then(|| predict::predict(&self.plan.detection, kernel, self.anchors()))
            .flatten();
        let close_t_us = acted.map(|(at, _)| self.timeline.t_us(at));
        let duration_us = micros(end.saturating_duration_since(self.timeline.start()));
        let peer_side = self
            .plan
            .peer_side
            .then(|| self.peer_track.into_peer_side());
        let afterlife = self
            .action
            .and_then(|_| std::mem::take(&mut self.afterlife).into_report(end));
        let snapshots = std::mem::take(&mut self.timeline.snapshots);
        let (events_dropped, snapshots_dropped) = (
            self.timeline.events_dropped,
            self.timeline.snapshots_dropped,
        );
        Report {
            schema: SCHEMA,
            kind: "connection",
            role: self.role,
            local: self.local,
            peer: self.peer,
            close: acted.map(|(_, mode)| mode),
            closer,
            close_t_us,
            verdict,
            fin_before_rst: (verdict == Verdict::Rst).then_some(self.reset_after_fin),
            detected_by: self.detected_by,
            detected_after_us: detected,
            detected_from: detected.map(|_| from),
            peer_idle_us: peer_idle,
            predicted_us: prediction
                .as_ref()
                .map(|p| micros(p.at.saturating_duration_since(anchor))),
            predicted_basis: prediction.map(|p| p.basis),
            duration_us,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            events: self.timeline.into_events(),
            events_dropped,
            tcp_info: snapshots.last().map(|s| s.tcp_info.clone()),
            snapshots,
            snapshots_dropped,
            peer_side,
            afterlife,
            packets: self.packets,
            packets_dropped: self.packets_dropped,
            unread_at_close: self.unread_at_close,
        }
    }
}
