"""Settings of the rgbd backend, one dataclass per part: the camera tracker and the aligner it
shares (`OdometryConfig`), per-object motion (`SegmentMotionConfig`) and the backend with its
queries (`RgbdConfig`, which holds the other two). Lengths in metres, intensities in grey levels
0-255, pixels at the processing resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fourd_ros.core.backends.rgbd.relocalize import RelocalizeConfig


@dataclass
class OdometryConfig:
    """Tuned parameters of ``RgbdOdometry`` (per-level tuples are finest level first).

    The defaults were tuned at 320x240 on the 7-Scenes sample (Kinect v1) and on synthetic clips
    with moving objects; the depth-noise model is that of structured-light sensors.

    Attributes:
        levels: pyramid levels (level 0 = input resolution, each next one half the size).
        iterations: Gauss-Newton iterations per level.
        sample_step: pixel stride of the tracked points at each level.
        min_depth, max_depth: valid depth range in metres.
        bilateral_sigma_m: range sigma of the bilateral filter of the input depth (0 = none).
        dist_gate_m: max 3D distance of an association at each level.
        normal_gate_deg: max angle between associated normals.
        robust_k: Cauchy scale in units of the robust (MAD) scale of the normalised residuals.
        min_sigma_m: lower bound of that robust scale, as a residual at 1 m depth.
        noise_power: exponent p of the per-point weight ``(sigma(1 m) / sigma(z)) ** p`` at each
            level (0 = uniform, 2 = inverse noise variance, more = trust near depth more).
        reject_k: before the finest level, points whose normalised residual exceeds this many
            robust scales are excluded from it (0 = off).
        prior_sigma_m, prior_sigma_deg: standard deviation of the constant-velocity motion
            prior per frame (0 = no prior).
        photo_weight: weight of the photometric term relative to the geometric one (0 = off).
        photo_sigma: intensity residual (0..255) worth ``geo_sigma_m`` of point-to-plane error.
        geo_sigma_m: point-to-plane residual worth ``photo_sigma`` of intensity error.
        photo_stride: use every n-th tracked point for the photometric term.
        min_points: minimum valid sampled points at level 0 to attempt tracking.
        min_inlier_ratio: minimum inlier fraction of the sampled points at the finest level.
        max_rmse_m: tracking fails above this inlier point-to-plane RMSE.
        max_step_m, max_step_deg: tracking fails when one frame moves more than this.
        fuse: fuse tracked frames into the keyframe depth model (frame-to-model tracking).
        fuse_step: pixel stride of the current-frame points fused into the model.
        update_in_background: update the keyframe model (fusion, a new keyframe) on a worker
            thread while the caller goes on with the frame (False: before ``track`` returns;
            the poses are the same either way).
        fuse_gate_m: max depth disagreement (at 1 m, grows with z^2) of a fused measurement.
        max_weight: cap of the per-pixel model weight (in frames).
        carry_weight: cap of the weight of the old model carried into a new keyframe (0 = none).
        kf_trans_m, kf_rot_deg: a new keyframe starts beyond this motion from the current one.
        kf_min_overlap: a new keyframe starts when fewer than this fraction of the tracked
            points find a gated association in it.
        convergence_eps: stop iterating a level when the update is below this (rad / m).
        relocalize: correspondences and PnP used when the constant-velocity guess fails.
        relocalize_agree_m, relocalize_agree_deg: a relocalised pose is accepted when ICP from
            the PnP pose ends within this of it.
        relocalize_trigger_m, relocalize_trigger_deg: an alignment that ends farther than this
            from its constant-velocity guess is checked against a relocalised one.
    """

    levels: int = 3
    iterations: tuple[int, ...] = (4, 5, 8)
    sample_step: tuple[int, ...] = (2, 1, 1)
    min_depth: float = 0.2
    max_depth: float = 6.0
    bilateral_sigma_m: float = 0.03
    dist_gate_m: tuple[float, ...] = (0.05, 0.08, 0.12)
    normal_gate_deg: float = 30.0
    robust_k: float = 2.0
    min_sigma_m: float = 0.0003
    noise_power: tuple[float, ...] = (4.0, 0.0, 0.0)
    reject_k: float = 5.0
    prior_sigma_m: float = 0.02
    prior_sigma_deg: float = 2.0
    photo_weight: float = 0.2
    photo_sigma: float = 8.0
    geo_sigma_m: float = 0.0025
    photo_stride: int = 4
    min_points: int = 300
    min_inlier_ratio: float = 0.15
    max_rmse_m: float = 0.05
    max_step_m: float = 0.3
    max_step_deg: float = 30.0
    fuse: bool = True
    fuse_step: int = 1
    update_in_background: bool = True
    fuse_gate_m: float = 0.02
    max_weight: float = 30.0
    carry_weight: float = 10.0
    kf_trans_m: float = 0.1
    kf_rot_deg: float = 10.0
    kf_min_overlap: float = 0.6
    convergence_eps: float = 2e-4
    relocalize: RelocalizeConfig = field(default_factory=RelocalizeConfig)
    relocalize_agree_m: float = 0.15
    relocalize_agree_deg: float = 10.0
    relocalize_trigger_m: float = 0.05
    relocalize_trigger_deg: float = 5.0


def _object_odometry() -> OdometryConfig:
    # objects are small: sample every pixel, weigh the photometric term fully, no depth-noise
    # reweighting (that favours the near background), a looser prior than a camera's (objects
    # accelerate more), and no model fusion (each pair of frames is aligned on its own)
    return OdometryConfig(sample_step=(1, 1, 1), noise_power=(0.0, 0.0, 0.0), photo_weight=1.0,
                          photo_stride=1, prior_sigma_m=0.05, prior_sigma_deg=5.0, fuse=False,
                          min_depth=0.05, max_depth=20.0)


@dataclass
class SegmentMotionConfig:
    """Settings (lengths in metres, intensities in grey levels 0-255).

    Attributes:
        min_pixels: smallest segment (pixels with depth) given a motion.
        max_segments: largest number of segments (the largest ones) given a motion per frame;
            bounds the time per frame.
        static_cost, static_margin: a segment is static (no motion given) when staying still
            explains it with a mean cost of at most static_cost (then no fit is run), or when
            the fitted motion does not beat staying still by static_margin agreement.
        max_points: points sampled per segment for scoring and for the flow RANSAC.
        ransac_iters, ransac_min_inliers, ransac_tol_abs, ransac_tol_rel: flow RANSAC
            (iterations, smallest inlier share, inlier distance max(abs, rel * depth)).
        agree_abs, agree_rel, agree_photo: a moved point's cost is the mean of its depth error
            over max(agree_abs, agree_rel * depth) and its intensity error over agree_photo,
            each capped at 1; a motion's agreement is the mean of 1 - cost over the segment's
            points.
        hidden_cost: cost of a point moved out of view or behind something nearer.
        leftover_min_share: smallest share of the image a part of the dynamic mask that no
            segment explains must cover to be fitted a motion of its own
            (`current_segments`).
        min_agreement: smallest agreement a segment's motion must reach.
        shading_sigma_px: Gaussian sigma (pixels) of the smooth shading removed from the
            intensities that motions are scored and aligned with.
        explained_max_cost: largest cost of a pixel kept in its segment after the first fit
            (it must also be explained better by the motion than by staying still).
        grow_max_factor, grow_max_share: a segment of the current frame grows over the
            depth-continuous surface it lies on when that surface has at most
            ``grow_max_factor`` times its pixels and at most ``grow_max_share`` of the image
            (an object seen whole against its background, not a floor or wall it touches),
            by the pixels its motion explains within ``explained_max_cost``; 0 turns it off.
        min_occluding_outline: a segment of the current frame is published only when at
            least this share of its outline (the pixels around it, image border left out)
            lies behind it by a depth jump or has no depth: an object stands out of its
            surroundings, a patch of a static surface next to a moving object does not (0
            turns the check off).
        refine_candidates: how many of the best-scoring candidates are refined by alignment.
        history: motions kept per followed segment for its constant-velocity prior.
        prior_min_history: motions a segment needs before its prior applies.
        prior_per_deg: agreement a candidate loses per degree between its rotation and the
            prior's (the median of the segment's recent rotations).
        prior_refine_deg: the prior is refined by alignment too when no refined candidate
            turns less than this from it (degrees).
        track_gate_m: largest distance between a segment's centroid and a followed segment's
            moved centroid for the two to be the same object.
        odometry: aligner settings for one segment.
    """

    min_pixels: int = 64
    max_segments: int = 8
    static_cost: float = 0.3
    static_margin: float = 0.02
    max_points: int = 400
    ransac_iters: int = 64
    ransac_min_inliers: float = 0.3
    ransac_tol_abs: float = 0.01
    ransac_tol_rel: float = 0.01
    agree_abs: float = 0.01
    agree_rel: float = 0.02
    agree_photo: float = 20.0
    min_agreement: float = 0.4
    shading_sigma_px: float = 4.0
    refine_candidates: int = 1
    explained_max_cost: float = 0.25
    grow_max_factor: float = 6.0
    grow_max_share: float = 0.2
    min_occluding_outline: float = 0.05
    hidden_cost: float = 0.5
    leftover_min_share: float = 0.005
    history: int = 8
    prior_min_history: int = 3
    prior_per_deg: float = 0.04
    prior_refine_deg: float = 1.0
    track_gate_m: float = 0.1
    odometry: OdometryConfig = field(default_factory=_object_odometry)


@dataclass
class RgbdConfig:
    """RGB-D backend settings (lengths in metres).

    Attributes:
        min_depth, max_depth: valid sensor range; depth outside is treated as missing.
        flow_preset: DIS optical-flow preset ('ultrafast', 'fast', 'medium').
        flow_smoothness, flow_gradient_weight: DIS variational refinement alpha (smoothness) and
            gamma (gradient constancy) weights.
        dynamic_rel, dynamic_abs: a point moves if its world displacement exceeds
            max(dynamic_rel * depth, dynamic_abs) (DPM-style scale-relative threshold).
        occlusion_rel, occlusion_abs: a point is hidden if the sensor sees something closer than
            its predicted depth by more than max(occlusion_rel * depth, occlusion_abs).
        occluder_rel: a query point that its source frame did not see move, and that a surface
            nearer by this share of its depth hides at the target if it stayed still, stayed
            still (the flow followed the occluder).
        static_photo_max: a query point that its source frame did not see move, and that
            staying still shows at the target at the depth it should have and with a grey level
            within this (0-255) of its own, no worse than where the flow took it, stayed still.
        still_photo_max, still_min_unexplained: the dynamic mask drops a moving part when
            staying still explains all but less than ``still_min_unexplained`` of its pixels:
            kept in place they show the depth they should have and a grey level within
            ``still_photo_max`` (0-255) of their own (the flow slid on a textureless static
            surface; a moving object shows motion at least at its edges). 0 turns it off.
        unseen_static_confidence, unseen_rigid_confidence, guess_confidence: query confidence
            of a static point the target does not see (placed by geometry and the poses), of a
            moving one it does not see that follows its object's rigid motion, and of a moving
            point with neither (visible points: exp(-grey-level difference / photo_max)).
        photo_max: grey-level difference (0-255) between a moving point's source and target
            pixels above which it counts as occluded.
        flow_border_px: a query point that its source frame did not see move, whose static
            place is out of the target's view and whose flow ends within this many pixels of
            the border (half the DIS patch: the patch left the image), stayed still.
        max_hop: largest frame-index gap decoded with one optical flow; longer gaps chain
            through cached frames.
        lk_window, lk_max_px: Lucas-Kanade window (pixels) and largest accepted correction
            (pixels) when refining chained moving points.
        segmentation_gaps: frames back that the dynamic mask compares each frame with: the
            previous one, the oldest (slow objects move too little in one frame to stand out
            of the depth noise) and one between (objects that entered the view since the
            oldest one).
        rigid_*: rigid motion of moving segments: smallest segment (pixels), points sampled
            per segment, RANSAC iterations, smallest inlier share, inlier distance
            max(rigid_tol_abs, rigid_tol_rel * depth) in metres, and the most hops in a row
            a segment without an estimated motion keeps its previous motion;
            rigid_attach_px: largest distance (pixels) from a moving query pixel outside
            every segment to a segment it joins (same surface in depth).
        flow_outlier_px, flow_outlier_step_px: pixels whose flow misses the dominant rigid
            motion by more than flow_outlier_px are kept out of the camera tracking (they may
            move unsegmented); tested on a grid of this step, each point standing for its
            step x step block.
        segment_motion: estimate each moving segment's rigid motion from frame to frame
            (``segment_motion.py``); chained queries then follow those motions and the stored
            flow on the segments is the rigid one.
        segments: settings of that estimate.
        odometry: camera tracker settings.
    """

    min_depth: float = 0.1
    max_depth: float = 10.0
    flow_preset: str = 'medium'
    flow_smoothness: float = 10.0
    flow_gradient_weight: float = 20.0
    dynamic_rel: float = 0.03
    dynamic_abs: float = 0.02
    occlusion_rel: float = 0.03
    occlusion_abs: float = 0.03
    occluder_rel: float = 0.25
    static_photo_max: float = 10.0
    still_photo_max: float = 10.0
    still_min_unexplained: float = 0.2
    unseen_static_confidence: float = 0.8
    unseen_rigid_confidence: float = 0.5
    guess_confidence: float = 0.05
    photo_max: float = 30.0
    flow_border_px: float = 4.0
    max_hop: int = 15
    segmentation_gaps: tuple[int, ...] = (1, 3, 6)
    rigid_min_pixels: int = 30
    rigid_max_points: int = 400
    rigid_ransac_iters: int = 64
    rigid_min_inliers: float = 0.3
    rigid_tol_abs: float = 0.01
    rigid_tol_rel: float = 0.01
    rigid_max_coast: int = 2
    rigid_attach_px: float = 6.0
    lk_window: int = 9
    lk_max_px: float = 4.0
    flow_outlier_px: float = 1.5
    flow_outlier_step_px: int = 8
    segment_motion: bool = True
    segments: SegmentMotionConfig = field(default_factory=SegmentMotionConfig)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)
