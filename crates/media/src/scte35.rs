//! SCTE-35 `splice_info_section`s carrying a `splice_insert`, the cue that ad-insertion services
//! read: HLS carries them as hex in `#EXT-X-DATERANGE`'s `SCTE35-OUT` and `SCTE35-IN`
//! (RFC 8216 4.4.5.1.1). Writing only; reserved bits are ones, as the standard asks.

use crate::ts::crc32_mpeg2;

/// `splice_command_type` of `splice_insert`.
const SPLICE_INSERT: u8 = 0x05;

/// One `splice_insert`: leaving the network (the break starts) or returning to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceInsert {
    pub event_id: u32,
    /// True at the start of a break (out of the network), false at its end.
    pub out_of_network: bool,
    /// The splice point, in 90 kHz ticks (33 bits).
    pub pts: u64,
    /// The break's planned length in 90 kHz ticks, with `auto_return` set (breaks only).
    pub duration: Option<u64>,
    pub unique_program_id: u16,
}

/// 33-bit value after a byte whose low bit is its top bit: the 5 bytes of `splice_time()` and
/// `break_duration()`.
fn push_33(out: &mut Vec<u8>, high_bits: u8, value: u64) {
    out.push(high_bits | ((value >> 32) & 1) as u8);
    out.extend_from_slice(&((value & 0xffff_ffff) as u32).to_be_bytes());
}

impl SpliceInsert {
    /// The whole `splice_info_section`, CRC included.
    pub fn section(&self) -> Vec<u8> {
        let mut command = Vec::with_capacity(20);
        command.extend_from_slice(&self.event_id.to_be_bytes());
        // splice_event_cancel_indicator 0, then reserved (or event_id_compliance_flag) ones.
        command.push(0x7f);
        // out_of_network, program_splice_flag = 1, duration_flag, splice_immediate_flag = 0,
        // event_id_compliance_flag / reserved = 1.
        let duration_flag = self.duration.is_some();
        command.push((u8::from(self.out_of_network) << 7) | 0x40 | (u8::from(duration_flag) << 5) | 0x0f);
        // splice_time(): time_specified_flag = 1, 6 reserved bits, pts_time.
        push_33(&mut command, 0xfe, self.pts & 0x1_ffff_ffff);
        if let Some(duration) = self.duration {
            // break_duration(): auto_return = 1, 6 reserved bits, duration.
            push_33(&mut command, 0xfe, duration & 0x1_ffff_ffff);
        }
        command.extend_from_slice(&self.unique_program_id.to_be_bytes());
        command.push(0); // avail_num
        command.push(0); // avails_expected

        let mut section = Vec::with_capacity(command.len() + 20);
        section.push(0xfc); // table_id
        // section_syntax_indicator 0, private_indicator 0, sap_type 3 (unspecified), then
        // section_length: the 10 bytes of header after it, the command, its type, the descriptor
        // loop length and the CRC.
        let section_length = 10 + 1 + command.len() + 2 + 4;
        section.push(0x30 | ((section_length >> 8) & 0x0f) as u8);
        section.push((section_length & 0xff) as u8);
        section.push(0); // protocol_version
        section.extend_from_slice(&[0; 5]); // not encrypted, pts_adjustment 0
        section.push(0); // cw_index
        // tier 0xFFF, splice_command_length (of the command after its type byte).
        let command_length = command.len();
        section.push(0xff);
        section.push(0xf0 | ((command_length >> 8) & 0x0f) as u8);
        section.push((command_length & 0xff) as u8);
        section.push(SPLICE_INSERT);
        section.extend_from_slice(&command);
        section.extend_from_slice(&[0, 0]); // descriptor_loop_length
        let crc = crc32_mpeg2(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        section
    }

    /// The section as HLS writes it in `SCTE35-OUT`/`SCTE35-IN`: `0x` and upper-case hex.
    pub fn hex(&self) -> String {
        let mut text = String::from("0x");
        for byte in self.section() {
            text.push_str(&format!("{byte:02X}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_break_start_has_its_fields_where_the_standard_puts_them() {
        let cue = SpliceInsert {
            event_id: 0x1234_5678,
            out_of_network: true,
            pts: 0x1_0000_0001,
            duration: Some(30 * 90_000),
            unique_program_id: 1,
        };
        let section = cue.section();
        assert_eq!(section[0], 0xfc);
        let section_length = (usize::from(section[1] & 0x0f) << 8) | usize::from(section[2]);
        assert_eq!(section_length, section.len() - 3);
        assert_eq!(section[13], SPLICE_INSERT);
        // splice_command_length: the command between its type byte and the descriptor loop.
        assert_eq!(usize::from(section[12]), section.len() - 14 - 2 - 4);
        assert_eq!(&section[14..18], &0x1234_5678u32.to_be_bytes());
        assert_eq!(section[19] & 0xe0, 0xe0, "out of network, program splice, duration");
        assert_eq!(section[20], 0xff, "time specified, top bit of the PTS set");
        // The CRC over the whole section, CRC included, is zero.
        assert_eq!(crc32_mpeg2(&section), 0);
        assert!(cue.hex().starts_with("0xFC30"));
    }

    #[test]
    fn a_return_has_no_duration() {
        let cue =
            SpliceInsert { event_id: 7, out_of_network: false, pts: 90_000, duration: None, unique_program_id: 1 };
        let section = cue.section();
        assert_eq!(section[19] & 0xe0, 0x40);
        // Header, command type, event id, flags, splice time, program id and avails, loop, CRC.
        assert_eq!(section.len(), 3 + 10 + 1 + (4 + 2 + 5 + 4) + 2 + 4);
    }
}
