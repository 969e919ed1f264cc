"""Simulated clinical photos in the Fitzpatrick 17k schema, for the demo, tests and benchmarks.

Every image is a photo-like rendering of skin with one of the seven conditions of the paper's
Table 1, on one of the six Fitzpatrick skin types (FST). Nothing here is a real patient:
reports that use these data say so with :data:`SIMULATED_NOTE`.

What is simulated, and why:

* **Skin colour** is drawn in CIE-Lab from a range of the individual typology angle
  ``ITA = atan((L* - 50) / b*)`` per type (:data:`ITA_RANGES`, degrees): I 59..68, II 44.5..51.5,
  III 31..38, IV 21.5..26.5 (each inside its band of the Kinyanjui thresholds that Fitzpatrick
  17k uses, > 55 I, > 41 II, > 28 III, > 19 IV, > 10 V, with a margin), V -26..4 and VI
  -58..-38, as measured on real skin of those types (V around the V/VI boundary, VI well below
  -30; L* of about 42-51 and 25-41). Under the Kinyanjui thresholds every ITA <= 10 maps to VI,
  so simulated V and VI images both read as VI there; their own boundary lies near -32 (thresholds
  fitted to labelled images, ``select.tone.fit_empirical_thresholds``, separate them). After
  texture and lighting are added, lightness is shifted once so that the median ITA of the
  healthy skin is the drawn angle.
* **Texture and photography**: mottling and fine noise at several scales, pores, skin creases,
  freckles on light skin, body hair on some images, directional light, vignetting, limb
  curvature, a background margin (drape, paper, wall) on some images, slight blur, sensor
  noise and JPEG compression at varying quality; 1:1, 4:3, 3:4, 3:2 and 2:3 frames.
* **Seven morphologies**, one per condition: basal cell carcinoma (pearly papule, rolled border,
  telangiectasia, sometimes a central ulcer; often pigmented on dark skin), folliculitis (many
  small follicular papules and pustules), nematode infection (serpiginous raised track, as
  cutaneous larva migrans), neutrophilic dermatoses (juicy erythematous plaques as in Sweet's
  syndrome, or an ulcer with a violaceous undermined border as in pyoderma gangrenosum),
  prurigo nodularis (many firm hyperpigmented nodules with excoriations), psoriasis
  (well-demarcated plaques with silvery scale), squamous cell carcinoma (keratotic, often
  ulcerated nodule with crust).
* **Tone-dependent appearance**, as in real photos: on darker skin erythema is less red and
  more violaceous or brown, its contrast against the skin is lower, hyperpigmentation is
  darker, inflammation leaves hyperpigmented halos and scale looks ashy grey. Lesion colour is a
  strong cue on light skin that shifts on dark skin, so a classifier trained on FST I-II
  transfers imperfectly to V-VI: the fairness gap the product measures.

Counts: the cell (condition, FST) has ``max(1, floor(scale * n + 0.5))`` images where Table 1
has ``n > 0`` (half-up rounding; the minimum of one keeps every cell of the table present at
any scale). Rows of unknown FST (-1) are added per condition as
``floor(scale * m + 0.5)`` (no minimum) with ``m`` the condition's count of unknown-FST rows in
the real table, so they are about 4% of the rows as there; their images are rendered on a hidden
type drawn from the condition's Table 1 distribution. ``fitzpatrick_centaur`` (the second
annotation of the real table) agrees with ``fitzpatrick_scale`` about 60% of the time, is one
type off about 30% and two types off or unknown otherwise, as the two annotations of the real
table disagree.

Identity and determinism: ``md5hash`` is the MD5 of the stable string
``dermsynth-sim:{random_seed}:{condition}:{fst}:{index}`` (not of the JPEG bytes, so ids do not
depend on the JPEG encoder), and each image's random generator is seeded from the same string.
The output is byte-identical across runs and independent of the number of worker processes.
Existing images that decode at their planned size are kept (resume); images are written
atomically and the CSV last.

Modules: :mod:`.tone` (skin colour per type, Lab to sRGB, lesion colours by tone),
:mod:`.canvas` (the Lab canvas and drawing primitives), :mod:`.photo` (skin texture, hair,
lighting, background), :mod:`.lesions` (the seven morphologies), :mod:`.render` (one image) and
:mod:`.dataset` (counts, plan, parallel rendering, :func:`simulate_dataset`).
"""

from __future__ import annotations

from dermsynth.data.simulate.dataset import (
    CSV_COLUMNS,
    CSV_NAME,
    IMAGES_DIRNAME,
    PARTITIONS,
    SIMULATED_NOTE,
    TABLE1,
    UNKNOWN_FST_COUNTS,
    cell_counts,
    plan_dataset,
    simulate_dataset,
)
from dermsynth.data.simulate.render import RenderedImage, render_image, render_sample
from dermsynth.data.simulate.tone import ITA_RANGES, SKIN_LAB, lab_to_rgb8, skin_lab

__all__ = [
    "CSV_COLUMNS",
    "CSV_NAME",
    "IMAGES_DIRNAME",
    "ITA_RANGES",
    "PARTITIONS",
    "SIMULATED_NOTE",
    "SKIN_LAB",
    "TABLE1",
    "UNKNOWN_FST_COUNTS",
    "RenderedImage",
    "cell_counts",
    "lab_to_rgb8",
    "plan_dataset",
    "render_image",
    "render_sample",
    "simulate_dataset",
    "skin_lab",
]
