//! Nameplate codes: validation and the PGP word list.
//!
//! A wormhole code is `<nameplate>-<word>-<word>…`. The nameplate (digits)
//! names a rendezvous slot on the mailbox server; the whole code is the
//! SPAKE2 password. Words come from the PGP word list, alternating between
//! its two columns exactly as Python's `wormhole._wordlist.choose_words`
//! does (first word from the "odd" column), so our codes look like theirs.

use crate::WormholeError;

/// Longest nameplate the mailbox server accepts (its `check_valid_nameplate`
/// drops the connection on longer ones, so we refuse them up front).
const MAX_NAMEPLATE_LEN: usize = 40;

/// Checks that `code` has the shape `<digits>-<something>`: no whitespace,
/// ASCII only, a numeric nameplate, and at least one non-empty word.
///
/// This needs no network, so callers can reject a mistyped code before
/// connecting. ASCII only because the Python client NFC-normalises the code
/// before using it as the password; restricting to ASCII (every generated
/// code is ASCII) avoids pulling in Unicode normalisation just to match it.
pub fn validate_code(code: &str) -> Result<(), WormholeError> {
    let malformed = |reason: &str| WormholeError::MalformedCode {
        code: code.to_owned(),
        reason: reason.to_owned(),
    };
    if code.is_empty() {
        return Err(malformed("it is empty"));
    }
    if code.chars().any(char::is_whitespace) {
        return Err(malformed("it contains spaces"));
    }
    if !code.is_ascii() || code.chars().any(|c| c.is_ascii_control()) {
        return Err(malformed("only ASCII letters, digits and '-' are expected"));
    }
    let Some((nameplate, words)) = code.split_once('-') else {
        return Err(malformed("expected <number>-<word>-<word>"));
    };
    if nameplate.is_empty() || !nameplate.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("it must start with a number followed by '-'"));
    }
    if nameplate.len() > MAX_NAMEPLATE_LEN {
        return Err(malformed("the number at its start is too long"));
    }
    if words.is_empty() {
        return Err(malformed("the words after the number are missing"));
    }
    Ok(())
}

/// The nameplate of an already validated code: everything before the first '-'.
pub(crate) fn nameplate_of(code: &str) -> &str {
    code.split_once('-').map_or(code, |(n, _)| n)
}

/// `count` random words joined by '-', alternating odd/even columns.
pub(crate) fn choose_words(count: usize) -> Result<String, WormholeError> {
    let mut bytes = vec![0u8; count];
    crate::crypto::random_fill(&mut bytes)?;
    let words: Vec<&str> = bytes
        .iter()
        .enumerate()
        // Python starts with an "odd word" (column 1) for word 0.
        .map(|(i, &b)| PGP_WORDS[usize::from(b)][if i % 2 == 0 { 1 } else { 0 }])
        .collect();
    Ok(words.join("-"))
}

/// The PGP word list, lower-cased: `[even word, odd word]` per byte value.
/// Public data (https://en.wikipedia.org/wiki/PGP_word_list), transcribed
/// from the table Python magic-wormhole ships.
const PGP_WORDS: [[&str; 2]; 256] = [
    ["aardvark", "adroitness"],   // 00
    ["absurd", "adviser"],        // 01
    ["accrue", "aftermath"],      // 02
    ["acme", "aggregate"],        // 03
    ["adrift", "alkali"],         // 04
    ["adult", "almighty"],        // 05
    ["afflict", "amulet"],        // 06
    ["ahead", "amusement"],       // 07
    ["aimless", "antenna"],       // 08
    ["algol", "applicant"],       // 09
    ["allow", "apollo"],          // 0A
    ["alone", "armistice"],       // 0B
    ["ammo", "article"],          // 0C
    ["ancient", "asteroid"],      // 0D
    ["apple", "atlantic"],        // 0E
    ["artist", "atmosphere"],     // 0F
    ["assume", "autopsy"],        // 10
    ["athens", "babylon"],        // 11
    ["atlas", "backwater"],       // 12
    ["aztec", "barbecue"],        // 13
    ["baboon", "belowground"],    // 14
    ["backfield", "bifocals"],    // 15
    ["backward", "bodyguard"],    // 16
    ["banjo", "bookseller"],      // 17
    ["beaming", "borderline"],    // 18
    ["bedlamp", "bottomless"],    // 19
    ["beehive", "bradbury"],      // 1A
    ["beeswax", "bravado"],       // 1B
    ["befriend", "brazilian"],    // 1C
    ["belfast", "breakaway"],     // 1D
    ["berserk", "burlington"],    // 1E
    ["billiard", "businessman"],  // 1F
    ["bison", "butterfat"],       // 20
    ["blackjack", "camelot"],     // 21
    ["blockade", "candidate"],    // 22
    ["blowtorch", "cannonball"],  // 23
    ["bluebird", "capricorn"],    // 24
    ["bombast", "caravan"],       // 25
    ["bookshelf", "caretaker"],   // 26
    ["brackish", "celebrate"],    // 27
    ["breadline", "cellulose"],   // 28
    ["breakup", "certify"],       // 29
    ["brickyard", "chambermaid"], // 2A
    ["briefcase", "cherokee"],    // 2B
    ["burbank", "chicago"],       // 2C
    ["button", "clergyman"],      // 2D
    ["buzzard", "coherence"],     // 2E
    ["cement", "combustion"],     // 2F
    ["chairlift", "commando"],    // 30
    ["chatter", "company"],       // 31
    ["checkup", "component"],     // 32
    ["chisel", "concurrent"],     // 33
    ["choking", "confidence"],    // 34
    ["chopper", "conformist"],    // 35
    ["christmas", "congregate"],  // 36
    ["clamshell", "consensus"],   // 37
    ["classic", "consulting"],    // 38
    ["classroom", "corporate"],   // 39
    ["cleanup", "corrosion"],     // 3A
    ["clockwork", "councilman"],  // 3B
    ["cobra", "crossover"],       // 3C
    ["commence", "crucifix"],     // 3D
    ["concert", "cumbersome"],    // 3E
    ["cowbell", "customer"],      // 3F
    ["crackdown", "dakota"],      // 40
    ["cranky", "decadence"],      // 41
    ["crowfoot", "december"],     // 42
    ["crucial", "decimal"],       // 43
    ["crumpled", "designing"],    // 44
    ["crusade", "detector"],      // 45
    ["cubic", "detergent"],       // 46
    ["dashboard", "determine"],   // 47
    ["deadbolt", "dictator"],     // 48
    ["deckhand", "dinosaur"],     // 49
    ["dogsled", "direction"],     // 4A
    ["dragnet", "disable"],       // 4B
    ["drainage", "disbelief"],    // 4C
    ["dreadful", "disruptive"],   // 4D
    ["drifter", "distortion"],    // 4E
    ["dropper", "document"],      // 4F
    ["drumbeat", "embezzle"],     // 50
    ["drunken", "enchanting"],    // 51
    ["dupont", "enrollment"],     // 52
    ["dwelling", "enterprise"],   // 53
    ["eating", "equation"],       // 54
    ["edict", "equipment"],       // 55
    ["egghead", "escapade"],      // 56
    ["eightball", "eskimo"],      // 57
    ["endorse", "everyday"],      // 58
    ["endow", "examine"],         // 59
    ["enlist", "existence"],      // 5A
    ["erase", "exodus"],          // 5B
    ["escape", "fascinate"],      // 5C
    ["exceed", "filament"],       // 5D
    ["eyeglass", "finicky"],      // 5E
    ["eyetooth", "forever"],      // 5F
    ["facial", "fortitude"],      // 60
    ["fallout", "frequency"],     // 61
    ["flagpole", "gadgetry"],     // 62
    ["flatfoot", "galveston"],    // 63
    ["flytrap", "getaway"],       // 64
    ["fracture", "glossary"],     // 65
    ["framework", "gossamer"],    // 66
    ["freedom", "graduate"],      // 67
    ["frighten", "gravity"],      // 68
    ["gazelle", "guitarist"],     // 69
    ["geiger", "hamburger"],      // 6A
    ["glitter", "hamilton"],      // 6B
    ["glucose", "handiwork"],     // 6C
    ["goggles", "hazardous"],     // 6D
    ["goldfish", "headwaters"],   // 6E
    ["gremlin", "hemisphere"],    // 6F
    ["guidance", "hesitate"],     // 70
    ["hamlet", "hideaway"],       // 71
    ["highchair", "holiness"],    // 72
    ["hockey", "hurricane"],      // 73
    ["indoors", "hydraulic"],     // 74
    ["indulge", "impartial"],     // 75
    ["inverse", "impetus"],       // 76
    ["involve", "inception"],     // 77
    ["island", "indigo"],         // 78
    ["jawbone", "inertia"],       // 79
    ["keyboard", "infancy"],      // 7A
    ["kickoff", "inferno"],       // 7B
    ["kiwi", "informant"],        // 7C
    ["klaxon", "insincere"],      // 7D
    ["locale", "insurgent"],      // 7E
    ["lockup", "integrate"],      // 7F
    ["merit", "intention"],       // 80
    ["minnow", "inventive"],      // 81
    ["miser", "istanbul"],        // 82
    ["mohawk", "jamaica"],        // 83
    ["mural", "jupiter"],         // 84
    ["music", "leprosy"],         // 85
    ["necklace", "letterhead"],   // 86
    ["neptune", "liberty"],       // 87
    ["newborn", "maritime"],      // 88
    ["nightbird", "matchmaker"],  // 89
    ["oakland", "maverick"],      // 8A
    ["obtuse", "medusa"],         // 8B
    ["offload", "megaton"],       // 8C
    ["optic", "microscope"],      // 8D
    ["orca", "microwave"],        // 8E
    ["payday", "midsummer"],      // 8F
    ["peachy", "millionaire"],    // 90
    ["pheasant", "miracle"],      // 91
    ["physique", "misnomer"],     // 92
    ["playhouse", "molasses"],    // 93
    ["pluto", "molecule"],        // 94
    ["preclude", "montana"],      // 95
    ["prefer", "monument"],       // 96
    ["preshrunk", "mosquito"],    // 97
    ["printer", "narrative"],     // 98
    ["prowler", "nebula"],        // 99
    ["pupil", "newsletter"],      // 9A
    ["puppy", "norwegian"],       // 9B
    ["python", "october"],        // 9C
    ["quadrant", "ohio"],         // 9D
    ["quiver", "onlooker"],       // 9E
    ["quota", "opulent"],         // 9F
    ["ragtime", "orlando"],       // A0
    ["ratchet", "outfielder"],    // A1
    ["rebirth", "pacific"],       // A2
    ["reform", "pandemic"],       // A3
    ["regain", "pandora"],        // A4
    ["reindeer", "paperweight"],  // A5
    ["rematch", "paragon"],       // A6
    ["repay", "paragraph"],       // A7
    ["retouch", "paramount"],     // A8
    ["revenge", "passenger"],     // A9
    ["reward", "pedigree"],       // AA
    ["rhythm", "pegasus"],        // AB
    ["ribcage", "penetrate"],     // AC
    ["ringbolt", "perceptive"],   // AD
    ["robust", "performance"],    // AE
    ["rocker", "pharmacy"],       // AF
    ["ruffled", "phonetic"],      // B0
    ["sailboat", "photograph"],   // B1
    ["sawdust", "pioneer"],       // B2
    ["scallion", "pocketful"],    // B3
    ["scenic", "politeness"],     // B4
    ["scorecard", "positive"],    // B5
    ["scotland", "potato"],       // B6
    ["seabird", "processor"],     // B7
    ["select", "provincial"],     // B8
    ["sentence", "proximate"],    // B9
    ["shadow", "puberty"],        // BA
    ["shamrock", "publisher"],    // BB
    ["showgirl", "pyramid"],      // BC
    ["skullcap", "quantity"],     // BD
    ["skydive", "racketeer"],     // BE
    ["slingshot", "rebellion"],   // BF
    ["slowdown", "recipe"],       // C0
    ["snapline", "recover"],      // C1
    ["snapshot", "repellent"],    // C2
    ["snowcap", "replica"],       // C3
    ["snowslide", "reproduce"],   // C4
    ["solo", "resistor"],         // C5
    ["southward", "responsive"],  // C6
    ["soybean", "retraction"],    // C7
    ["spaniel", "retrieval"],     // C8
    ["spearhead", "retrospect"],  // C9
    ["spellbind", "revenue"],     // CA
    ["spheroid", "revival"],      // CB
    ["spigot", "revolver"],       // CC
    ["spindle", "sandalwood"],    // CD
    ["spyglass", "sardonic"],     // CE
    ["stagehand", "saturday"],    // CF
    ["stagnate", "savagery"],     // D0
    ["stairway", "scavenger"],    // D1
    ["standard", "sensation"],    // D2
    ["stapler", "sociable"],      // D3
    ["steamship", "souvenir"],    // D4
    ["sterling", "specialist"],   // D5
    ["stockman", "speculate"],    // D6
    ["stopwatch", "stethoscope"], // D7
    ["stormy", "stupendous"],     // D8
    ["sugar", "supportive"],      // D9
    ["surmount", "surrender"],    // DA
    ["suspense", "suspicious"],   // DB
    ["sweatband", "sympathy"],    // DC
    ["swelter", "tambourine"],    // DD
    ["tactics", "telephone"],     // DE
    ["talon", "therapist"],       // DF
    ["tapeworm", "tobacco"],      // E0
    ["tempest", "tolerance"],     // E1
    ["tiger", "tomorrow"],        // E2
    ["tissue", "torpedo"],        // E3
    ["tonic", "tradition"],       // E4
    ["topmost", "travesty"],      // E5
    ["tracker", "trombonist"],    // E6
    ["transit", "truncated"],     // E7
    ["trauma", "typewriter"],     // E8
    ["treadmill", "ultimate"],    // E9
    ["trojan", "undaunted"],      // EA
    ["trouble", "underfoot"],     // EB
    ["tumor", "unicorn"],         // EC
    ["tunnel", "unify"],          // ED
    ["tycoon", "universe"],       // EE
    ["uncut", "unravel"],         // EF
    ["unearth", "upcoming"],      // F0
    ["unwind", "vacancy"],        // F1
    ["uproot", "vagabond"],       // F2
    ["upset", "vertigo"],         // F3
    ["upshot", "virginia"],       // F4
    ["vapor", "visitor"],         // F5
    ["village", "vocalist"],      // F6
    ["virus", "voyager"],         // F7
    ["vulcan", "warranty"],       // F8
    ["waffle", "waterloo"],       // F9
    ["wallet", "whimsical"],      // FA
    ["watchword", "wichita"],     // FB
    ["wayside", "wilmington"],    // FC
    ["willow", "wyoming"],        // FD
    ["woodlark", "yesteryear"],   // FE
    ["zulu", "yucatan"],          // FF
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_codes() {
        for code in ["1-a", "7-guitarist-revenge", "123-absurd-adviser-zulu"] {
            validate_code(code).unwrap();
        }
        assert_eq!(nameplate_of("42-foo-bar"), "42");
    }

    #[test]
    fn malformed_codes() {
        for code in [
            "",
            "abc",
            "12",
            "12-",
            "-foo-bar",
            "x1-foo",
            "1 2-foo",
            "1-foo bar",
            "1-föö",
            " 1-foo",
            "1-foo\n",
        ] {
            let err = validate_code(code).unwrap_err();
            assert!(
                matches!(err, WormholeError::MalformedCode { .. }),
                "{code:?}: {err}"
            );
        }
        let long = format!("{}-foo", "1".repeat(41));
        assert!(validate_code(&long).is_err());
    }

    #[test]
    fn words_alternate_columns_and_validate() {
        let words = choose_words(4).unwrap();
        let parts: Vec<&str> = words.split('-').collect();
        assert_eq!(parts.len(), 4);
        for (i, w) in parts.iter().enumerate() {
            let col = if i % 2 == 0 { 1 } else { 0 };
            assert!(
                PGP_WORDS.iter().any(|pair| pair[col] == *w),
                "{w} not in column {col}"
            );
        }
        validate_code(&format!("5-{words}")).unwrap();
    }

    #[test]
    fn word_list_is_sane() {
        // Both columns are distinct words, all lower-case ASCII letters.
        let mut all: Vec<&str> = PGP_WORDS.iter().flatten().copied().collect();
        assert!(all
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase())));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 512);
    }
}
