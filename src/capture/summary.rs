//! One line per frame, as tcpdump prints them, with the lab's task names for its addresses:
//! `16:40:01.123456 pong.1/lan in  ping.1 > pong.1: ICMP echo request, id 7, seq 1, 98 bytes`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use etherparse::{Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

use super::{Direction, Frame};

/// Who an address is (`ping.1`), else the address.
fn who(ip: IpAddr, names: &HashMap<Ipv4Addr, String>) -> String {
    match ip {
        IpAddr::V4(v4) => names.get(&v4).cloned().unwrap_or_else(|| v4.to_string()),
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// What the frame carries, past its Ethernet header.
pub fn describe(data: &[u8], names: &HashMap<Ipv4Addr, String>) -> String {
    let Ok(packet) = SlicedPacket::from_ethernet(data) else {
        return "a frame too short to read".into();
    };
    let (source, destination) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => (IpAddr::V4(ip.header().source_addr()), IpAddr::V4(ip.header().destination_addr())),
        Some(NetSlice::Ipv6(ip)) => (IpAddr::V6(ip.header().source_addr()), IpAddr::V6(ip.header().destination_addr())),
        Some(NetSlice::Arp(arp)) => {
            let ip = |bytes: &[u8]| <[u8; 4]>::try_from(bytes).map(|b| who(IpAddr::V4(Ipv4Addr::from(b)), names)).unwrap_or_else(|_| "?".into());
            let mac = arp.sender_hw_addr().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            return match arp.operation() {
                etherparse::ArpOperation::REQUEST => format!("ARP who-has {} tell {}", ip(arp.target_protocol_addr()), ip(arp.sender_protocol_addr())),
                etherparse::ArpOperation::REPLY => format!("ARP {} is-at {mac}", ip(arp.sender_protocol_addr())),
                other => format!("ARP operation {}", other.0),
            };
        }
        None => {
            // Past the two addresses comes the Ethernet type (from_ethernet read them).
            return data.get(12..14).map(|t| format!("ethertype 0x{:02x}{:02x}", t[0], t[1])).unwrap_or_else(|| "an unknown frame".into());
        }
    };
    let (from, to) = (who(source, names), who(destination, names));
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let mut flags = String::new();
            for (set, mark) in [(tcp.syn(), 'S'), (tcp.fin(), 'F'), (tcp.rst(), 'R'), (tcp.psh(), 'P'), (tcp.ack(), '.')] {
                if set {
                    flags.push(mark);
                }
            }
            format!("{from}:{} > {to}:{}: TCP [{flags}], seq {}, {} bytes of data", tcp.source_port(), tcp.destination_port(), tcp.sequence_number(), tcp.payload().len())
        }
        Some(TransportSlice::Udp(udp)) => format!("{from}:{} > {to}:{}: UDP, {} bytes of data", udp.source_port(), udp.destination_port(), udp.payload().len()),
        Some(TransportSlice::Icmpv4(icmp)) => {
            let what = match icmp.icmp_type() {
                Icmpv4Type::EchoRequest(echo) => format!("echo request, id {}, seq {}", echo.id, echo.seq),
                Icmpv4Type::EchoReply(echo) => format!("echo reply, id {}, seq {}", echo.id, echo.seq),
                Icmpv4Type::DestinationUnreachable(_) => "destination unreachable".into(),
                _ => format!("type {}", icmp.type_u8()),
            };
            format!("{from} > {to}: ICMP {what}")
        }
        Some(TransportSlice::Icmpv6(icmp)) => format!("{from} > {to}: ICMPv6 type {}", icmp.type_u8()),
        None => format!("{from} > {to}: IP protocol {}", packet.net.as_ref().and_then(|n| n.ip_payload_ref()).map(|p| p.ip_number.0).unwrap_or_default()),
    }
}

/// The frame's line: time (UTC), tap, direction, what it carries, its length on the wire.
pub fn line(frame: &Frame, tap_name: &str, width: usize, names: &HashMap<Ipv4Addr, String>) -> String {
    // UTC, as labctl's other times (`logs -t`, the steps' marks).
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp(frame.at.as_secs() as i64, frame.at.subsec_nanos()).unwrap_or_default();
    let direction = match frame.direction {
        Direction::In => "in ",
        Direction::Out => "out",
    };
    format!("{} {tap_name:<width$} {direction} {}, {} bytes", at.format("%H:%M:%S%.6f"), describe(&frame.data, names), frame.original_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn names() -> HashMap<Ipv4Addr, String> {
        HashMap::from([(Ipv4Addr::new(10, 0, 1, 5), "ping.1".to_string()), (Ipv4Addr::new(10, 0, 1, 6), "pong.1".to_string())])
    }

    fn frame(build: impl FnOnce(etherparse::PacketBuilderStep<etherparse::Ethernet2Header>) -> Vec<u8>) -> Vec<u8> {
        build(PacketBuilder::ethernet2([2, 66, 10, 0, 1, 5], [2, 66, 10, 0, 1, 6]))
    }

    #[test]
    fn a_ping_names_the_lab_s_tasks() {
        let data = frame(|b| {
            let b = b.ipv4([10, 0, 1, 5], [10, 0, 1, 6], 64).icmpv4_echo_request(7, 1);
            let mut out = Vec::new();
            b.write(&mut out, &[0; 56]).unwrap();
            out
        });
        assert_eq!(describe(&data, &names()), "ping.1 > pong.1: ICMP echo request, id 7, seq 1");
        let line = line(&Frame { tap: 0, at: std::time::Duration::new(1, 5000), direction: Direction::Out, original_len: 98, data }, "ping.1/lan", 12, &names());
        assert!(line.ends_with(".000005 ping.1/lan   out ping.1 > pong.1: ICMP echo request, id 7, seq 1, 98 bytes"), "{line}");
    }

    #[test]
    fn tcp_and_udp_show_ports_flags_and_payload_and_unknown_addresses_stay_numbers() {
        let syn = frame(|b| {
            let b = b.ipv4([10, 0, 1, 5], [10, 0, 9, 9], 64).tcp(43122, 6379, 1000, 64000).syn();
            let mut out = Vec::new();
            b.write(&mut out, &[]).unwrap();
            out
        });
        assert_eq!(describe(&syn, &names()), "ping.1:43122 > 10.0.9.9:6379: TCP [S], seq 1000, 0 bytes of data");
        let udp = frame(|b| {
            let b = b.ipv4([10, 0, 1, 6], [10, 0, 1, 5], 64).udp(53, 5353);
            let mut out = Vec::new();
            b.write(&mut out, b"hello").unwrap();
            out
        });
        assert_eq!(describe(&udp, &names()), "pong.1:53 > ping.1:5353: UDP, 5 bytes of data");
        assert_eq!(describe(&[1, 2, 3], &names()), "a frame too short to read");
    }
}
