"""The thresholds of the claims' verdicts: each one is stated in the rule printed in its claim's row."""

UQ_GAP_CLOSED = 0.5  # C1: PMC closes at least this share of the target -> retain unlearn-quality gap ...
UTILITY_KEPT = 0.9  # ... and keeps at least this share of the target's utility
NEAR_ZERO = 0.25  # C2: |PMC's shift| at most this share of |NPO's|
ATTACK_STANDARD_ERRORS = 2.0  # C3: the attack succeeds above chance + 2 binomial standard errors
SELECTED_BY_EPOCH = 3  # C5: the selected answers' ROUGE by the end of this epoch ...
SELECTED_DROP = 0.5  # ... at most this share of its first logged value
RETAIN_GIVEN_BACK = 0.5  # C5: the final epoch's retain loss gives back at least this share of its rise
DEGENERATE = {"empty_rate": 0.25, "distinct_ratio": 0.2, "fluency_nll": 1.0}  # C6: change against the target
ABLATION_MARGIN = 1.0  # C4: points of unlearn quality / utility
