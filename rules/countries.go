package rules

import "strings"

// Country codes are ISO 3166-1 alpha-2, upper case. The geo package reports
// two more values for addresses the database does not place.
const (
	CountryInternal = "internal" // a private or loopback address the database does not place
	CountryUnknown  = "unknown"  // any other address the database does not place
)

// iso3166 lists the officially assigned ISO 3166-1 alpha-2 codes, plus XK
// (Kosovo), which geolocation databases use. It is here so that a typo such
// as "JA" in a rules file is an error rather than a country that never
// matches.
const iso3166 = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
	"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR " +
	"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP " +
	"KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT " +
	"MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW " +
	"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG " +
	"UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW"

// builtinCountryGroups are the groups every rules file can name. EU is the
// 27 member states (not the ISO "EU" reservation); EEA adds Iceland,
// Liechtenstein and Norway — the area within which GDPR lets data move.
var builtinCountryGroups = map[string]string{
	"EU":  "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE",
	"EEA": "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO",
}

// countrySet is a set of two-letter codes as a 676-bit bitmap: membership is
// two subtractions and a shift, with no hashing and no allocation.
type countrySet [11]uint64

func codeIndex(c string) int {
	if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return -1
	}
	return int(c[0]-'A')*26 + int(c[1]-'A')
}

func (s *countrySet) add(c string) {
	if i := codeIndex(c); i >= 0 {
		s[i>>6] |= 1 << (i & 63)
	}
}

func (s *countrySet) has(c string) bool {
	i := codeIndex(c)
	return i >= 0 && s[i>>6]&(1<<(i&63)) != 0
}

// codes lists the members in alphabetical order.
func (s *countrySet) codes() []string {
	var out []string
	for i := 0; i < 26*26; i++ {
		if s[i>>6]&(1<<(i&63)) != 0 {
			out = append(out, string([]byte{byte('A' + i/26), byte('A' + i%26)}))
		}
	}
	return out
}

var validCountries = func() countrySet {
	var s countrySet
	for _, c := range strings.Fields(iso3166) {
		s.add(c)
	}
	return s
}()

// ValidCountry reports whether c is an assigned ISO 3166-1 alpha-2 code
// (upper case) or XK.
func ValidCountry(c string) bool { return validCountries.has(c) }
