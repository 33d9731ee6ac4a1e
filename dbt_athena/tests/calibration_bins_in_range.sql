-- Every bin lies in 0 .. calibration_bins - 1 and every bin's figures are proportions.
select *
from {{ ref('calibration_bins') }}
where bin < 0
    or bin >= {{ var('calibration_bins') | int }}
    or mean_confidence < 0 or mean_confidence > 1
    or accuracy < 0 or accuracy > 1
