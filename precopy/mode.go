package precopy

import "fmt"

// ParseTrackMode maps a flag value to a TrackMode: "auto" (or empty),
// "wp-async", "wp-sync" or "rehash".
func ParseTrackMode(s string) (TrackMode, error) {
	switch TrackMode(s) {
	case "auto", TrackAuto:
		return TrackAuto, nil
	case TrackWPAsync, TrackWPSync, TrackRehash:
		return TrackMode(s), nil
	}
	return "", fmt.Errorf("unknown tracking mode %q (want auto, wp-async, wp-sync or rehash)", s)
}
