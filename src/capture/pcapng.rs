//! The capture as a pcapng file (Wireshark's and tcpdump's format): one interface per tap,
//! named `ping.1/lan` and described with its node and its interface inside the task (a task
//! that starts during the capture adds its own then), frames stamped in nanoseconds with their
//! direction, a name record for every address of the lab's tasks, so Wireshark shows `ping.1`
//! where the packet says 10.0.1.5, and the schedule's steps as comments on frames.

use std::borrow::Cow;
use std::io::Write;
use std::net::Ipv4Addr;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::name_resolution::{Ipv4Record, NameResolutionBlock, Record};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use super::{Direction, Frame, Tap};

/// pcapng's `epb_flags` direction bits (inbound 01, outbound 10).
fn flags(direction: Direction) -> u32 {
    match direction {
        Direction::In => 0b01,
        Direction::Out => 0b10,
    }
}

pub struct PcapngOut<W: Write> {
    writer: PcapNgWriter<W>,
}

impl<W: Write> PcapngOut<W> {
    /// Starts the file (its section header); interfaces and names come as taps join.
    pub fn start(out: W) -> Result<PcapngOut<W>, pcap_file::PcapError> {
        Ok(PcapngOut { writer: PcapNgWriter::new(out)? })
    }

    /// A tap's interface; taps must be added in the order of their index (a frame's `tap` is
    /// its interface's number in the file).
    pub fn add_tap(&mut self, lab: &str, tap: &Tap, snaplen: u32) -> Result<(), pcap_file::PcapError> {
        let description = format!("lab {lab}: task {} on {}, network {} ({} in the task)", tap.task, tap.node, tap.network, tap.interface);
        self.writer.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(tap.name())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(description)),
                // The crate writes timestamps in nanoseconds; this tells readers so.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })?;
        Ok(())
    }

    /// Names for addresses (a name record may come anywhere in the file).
    pub fn add_names(&mut self, names: &[(Ipv4Addr, String)]) -> Result<(), pcap_file::PcapError> {
        if !names.is_empty() {
            let records = names.iter().map(|(ip, name)| Record::Ipv4(Ipv4Record { ip_addr: Cow::Owned(ip.octets().to_vec()), names: vec![Cow::Owned(name.clone())] })).collect();
            self.writer.write_pcapng_block(NameResolutionBlock { records, options: vec![] })?;
        }
        Ok(())
    }

    /// A frame, with a comment if given (Wireshark shows it and filters on `frame.comment`).
    pub fn write(&mut self, frame: &Frame, comment: Option<&str>) -> Result<(), pcap_file::PcapError> {
        let mut options = vec![EnhancedPacketOption::Flags(flags(frame.direction))];
        if let Some(comment) = comment {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(comment)));
        }
        self.writer.write_pcapng_block(EnhancedPacketBlock {
            interface_id: frame.tap as u32,
            timestamp: frame.at,
            original_len: frame.original_len,
            data: Cow::Borrowed(&frame.data),
            options,
        })?;
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.writer.get_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::time::Duration;

    #[test]
    fn a_capture_reads_back_with_its_interfaces_names_directions_and_nanosecond_times() {
        let taps = [
            Tap { task: "ping.1".into(), network: "lan".into(), interface: "eth1".into(), node: "n1".into() },
            Tap { task: "pong.1".into(), network: "lan".into(), interface: "eth2".into(), node: "n1".into() },
        ];
        let names = [(Ipv4Addr::new(10, 0, 1, 5), "ping.1".to_string())];
        let mut out = PcapngOut::start(Vec::new()).unwrap();
        out.add_tap("demo", &taps[0], 262_144).unwrap();
        out.add_names(&names).unwrap();
        let at = Duration::new(1_764_000_000, 123_456_789);
        out.write(&Frame { tap: 0, at, direction: Direction::Out, original_len: 98, data: vec![7; 98] }, None).unwrap();
        // A task that joins later: its interface comes after the first frames.
        out.add_tap("demo", &taps[1], 262_144).unwrap();
        out.write(&Frame { tap: 1, at, direction: Direction::In, original_len: 98, data: vec![7; 60] }, Some("step 2/3: partition")).unwrap();
        let bytes = out.writer.into_inner();

        let mut reader = PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(block) = reader.next_block() {
            seen.push(block.unwrap().into_owned());
        }
        let interfaces: Vec<_> = reader.interfaces().iter().map(|i| i.options.clone()).collect();
        assert_eq!(interfaces.len(), 2);
        assert!(interfaces[1].contains(&InterfaceDescriptionOption::IfName("pong.1/lan".into())), "{interfaces:?}");
        assert!(interfaces[1].iter().any(|o| matches!(o, InterfaceDescriptionOption::IfDescription(d) if d.contains("eth2") && d.contains("demo"))));
        let Some(Block::NameResolution(nrb)) = seen.iter().find(|b| matches!(b, Block::NameResolution(_))) else { panic!("no name record: {seen:?}") };
        assert_eq!(nrb.records, vec![Record::Ipv4(Ipv4Record { ip_addr: vec![10, 0, 1, 5].into(), names: vec!["ping.1".into()] })]);
        let Some(Block::EnhancedPacket(packet)) = seen.last() else { panic!("no packet: {seen:?}") };
        assert_eq!((packet.interface_id, packet.timestamp, packet.original_len, packet.data.len()), (1, at, 98, 60));
        assert_eq!(packet.options, vec![EnhancedPacketOption::Flags(0b01), EnhancedPacketOption::Comment("step 2/3: partition".into())]);
        let first = seen.iter().find_map(|b| if let Block::EnhancedPacket(p) = b { Some(p) } else { None }).unwrap();
        assert_eq!((first.interface_id, first.options.clone()), (0, vec![EnhancedPacketOption::Flags(0b10)]));
    }
}
