"""Offscreen rendering of a triangle mesh seen by a pinhole camera (pyrender).

Conventions (the computer-vision camera used throughout SPIN):
- Vertices are in the camera frame, metres: x right, y down, z forward (depth > 0).
  OpenGL's camera looks down -z with y up; the conversion (x, -y, -z) happens here.
- ``intrinsics`` is the (3, 3) matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in
  pixels, with (u, v) = (along the width, along the height) measured from the top-left
  corner of the image, so pixel (column i, row j) has its centre at (i + 0.5, j + 0.5)
  and the image centre is (W / 2, H / 2): the convention of
  :mod:`spin.geometry.cameras` (SPIN's), and OpenGL's. A point that
  ``spin.geometry.perspective_projection`` sends to (u, v) is drawn in pixel
  (floor(u), floor(v)).
- ``image_size`` is ``(width, height)``; images are (H, W, C) uint8 arrays.
- ``color`` is (r, g, b) in [0, 1].

One :class:`MeshRenderer` holds one OpenGL context of a fixed size; reuse it across
calls (creating one costs far more than a frame). The module-level functions make a
temporary one unless given ``renderer=``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from spin.render.backend import backend_error_hint, select_backend

DEFAULT_COLOR = (0.65, 0.74, 0.86)
# Clipping planes, metres from the camera.
Z_NEAR_M = 0.05
Z_FAR_M = 100.0
# Shading: a dim ambient term plus three directional lights fixed to the camera
# (key from upper left, fill from the right, rim from above and behind), each given as
# the direction the light travels in the camera frame (x right, y down, z forward).
AMBIENT_LIGHT = (0.3, 0.3, 0.3)
LIGHTS = (
    ((0.5, 0.6, 1.0), 2.5),
    ((-0.8, 0.1, 0.6), 1.2),
    ((0.0, 1.0, -0.6), 1.0),
)
MATERIAL_METALLIC = 0.1
MATERIAL_ROUGHNESS = 0.6
# Fraction of the image (each axis) that a framed mesh may fill.
DEFAULT_FILL = 0.9
# Labels of render_labels are packed into the 24-bit RGB colour of a segmentation pass.
MAX_LABEL = 2**24 - 1


@dataclass(frozen=True)
class LabelRender:
    """Result of :meth:`MeshRenderer.render_labels`.

    Attributes:
        labels: (H, W) int32, the label of the face seen at each pixel centre, 0 off the mesh.
        depth: (H, W) float32 camera z in metres of that face, 0 off the mesh.
    """

    labels: np.ndarray
    depth: np.ndarray


class MeshRenderer:
    """An offscreen OpenGL renderer of a fixed image size, reusable across calls.

    Use as a context manager or call :meth:`close` to free the OpenGL context.

    Args:
        image_size: (width, height) of the images it renders, in pixels.
    """

    def __init__(self, image_size: Sequence[int]):
        self.image_size = _check_image_size(image_size)
        self.platform = select_backend()
        try:
            import pyrender

            self._renderer = pyrender.OffscreenRenderer(*self.image_size)
        except Exception as error:
            raise backend_error_hint(self.platform, error) from error

    def close(self) -> None:
        """Free the OpenGL context; the renderer can't be used afterwards."""
        if self._renderer is not None:
            self._renderer.delete()
            self._renderer = None

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def render(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        intrinsics: np.ndarray,
        color: Sequence[float] = DEFAULT_COLOR,
        background: np.ndarray | None = None,
        alpha: float = 1.0,
        *,
        vertex_colors: np.ndarray | None = None,
        lights: Sequence[tuple[Sequence[float], float]] = LIGHTS,
    ) -> np.ndarray:
        """Render the shaded mesh, alone or composited over ``background``.

        Edges are antialiased where the platform multisamples (EGL); on OSMesa a pixel
        is either on the mesh or off it.

        Args:
            vertices: (V, 3) metres in the camera frame.
            faces: (F, 3) vertex indices.
            intrinsics: (3, 3) pixels.
            color: (r, g, b) in [0, 1].
            background: optional (H, W, 3) uint8 image to draw on.
            alpha: opacity of the mesh over ``background``, in [0, 1].
            vertex_colors: optional (V, 3) per-vertex (r, g, b) in [0, 1], used instead
                of ``color`` (interpolated across faces).
            lights: directional lights, each (direction it travels in the camera frame
                (3,), intensity); :data:`LIGHTS` by default.

        Returns:
            (H, W, 4) uint8 RGBA (straight alpha: the mesh's coverage of each pixel, 0
            off the mesh) if no background is given, else (H, W, 3) uint8 whose pixels
            off the mesh are exactly those of ``background``.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"expected alpha in [0, 1], got {alpha}")
        if background is not None:
            background = _check_background(background, self.image_size)
        premultiplied, coverage = self._render_shaded(
            vertices, faces, intrinsics, color, vertex_colors, lights
        )
        if background is None:
            straight = premultiplied / np.maximum(coverage, 1e-6)[..., None]
            rgba = np.dstack([straight, 255.0 * coverage])
            return np.clip(np.rint(rgba), 0, 255).astype(np.uint8)
        out = background.copy()
        on_mesh = coverage > 0
        opacity = alpha * coverage[on_mesh][:, None]
        blended = alpha * premultiplied[on_mesh] + (1.0 - opacity) * background[on_mesh]
        out[on_mesh] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out

    def render_depth(
        self, vertices: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray
    ) -> np.ndarray:
        """(H, W) float32 depth (camera z) in metres of the nearest surface, 0 off the mesh.

        Each pixel is sampled at its centre, on every platform.
        """
        import pyrender

        scene, mesh_node = self._scene(vertices, faces, intrinsics, DEFAULT_COLOR)
        # SEG switches multisampling off, so pixels are sampled at their centres (with 4x
        # MSAA, EGL's depth comes from one sample, up to half a pixel off centre).
        flags = pyrender.RenderFlags.DEPTH_ONLY | pyrender.RenderFlags.SEG
        depth = self._renderer.render(scene, flags=flags, seg_node_map={mesh_node: 255})
        return np.asarray(depth, dtype=np.float32)

    def render_silhouette(
        self, vertices: np.ndarray, faces: np.ndarray, intrinsics: np.ndarray
    ) -> np.ndarray:
        """(H, W) bool mask of the pixels the mesh covers."""
        return self.render_depth(vertices, faces, intrinsics) > 0

    def render_labels(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        face_labels: np.ndarray,
        intrinsics: np.ndarray,
    ) -> LabelRender:
        """Exact per-pixel labels of the visible faces, and the depth map, in one pass.

        Each distinct label becomes its own scene node drawn in a flat segmentation
        colour with multisampling off, so every pixel holds exactly one label of a face
        covering its centre (no mixing at label borders or silhouette edges), on EGL
        and OSMesa alike. The nonzero pixels are exactly :meth:`render_silhouette`'s.

        Args:
            vertices: (V, 3) metres in the camera frame.
            faces: (F, 3) vertex indices.
            face_labels: (F,) integer label of each face, in [1, MAX_LABEL].
            intrinsics: (3, 3) pixels.

        Returns:
            A :class:`LabelRender` of (H, W) labels (0 off the mesh) and depth.
        """
        import pyrender

        if self._renderer is None:
            raise RuntimeError("this MeshRenderer was closed; make a new one")
        scene, node_colors = _build_label_scene(vertices, faces, face_labels, intrinsics)
        color, depth = self._renderer.render(
            scene, flags=pyrender.RenderFlags.SEG, seg_node_map=node_colors
        )
        color = np.asarray(color, dtype=np.int32)
        labels = color[..., 0] | (color[..., 1] << 8) | (color[..., 2] << 16)
        return LabelRender(labels=labels, depth=np.asarray(depth, dtype=np.float32))

    def _render_shaded(self, vertices, faces, intrinsics, color, vertex_colors=None, lights=LIGHTS):
        """(H, W, 3) float colour premultiplied by coverage, in [0, 255], and (H, W)
        coverage in [0, 1]."""
        import pyrender

        scene, _ = self._scene(vertices, faces, intrinsics, color, vertex_colors, lights)
        rendered, depth = self._renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        if rendered.shape[2] == 4:
            # Multisampled over a transparent black background: alpha is the coverage
            # and the colour is already premultiplied by it.
            coverage = rendered[..., 3].astype(np.float64) / 255.0
        else:
            # OSMesa ignores the RGBA flag and does not multisample: use depth.
            coverage = (depth > 0).astype(np.float64)
        return rendered[..., :3].astype(np.float64), coverage

    def _scene(self, vertices, faces, intrinsics, color, vertex_colors=None, lights=LIGHTS):
        if self._renderer is None:
            raise RuntimeError("this MeshRenderer was closed; make a new one")
        return _build_scene(vertices, faces, intrinsics, color, vertex_colors, lights)


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    color: Sequence[float] = DEFAULT_COLOR,
    background: np.ndarray | None = None,
    renderer: MeshRenderer | None = None,
) -> np.ndarray:
    """Render a shaded mesh: (H, W, 4) RGBA, or (H, W, 3) RGB over ``background``.

    Args:
        vertices: (V, 3) metres in the camera frame (x right, y down, z forward).
        faces: (F, 3) vertex indices.
        intrinsics: (3, 3) pixels.
        image_size: (width, height) in pixels.
        color: (r, g, b) in [0, 1].
        background: optional (H, W, 3) uint8 image; pixels off the mesh are kept.
        renderer: a :class:`MeshRenderer` of ``image_size`` to reuse, else a temporary one.
    """
    with _use_renderer(renderer, image_size) as active:
        return active.render(vertices, faces, intrinsics, color, background)


def render_overlay(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    alpha: float = 0.8,
    color: Sequence[float] = DEFAULT_COLOR,
    renderer: MeshRenderer | None = None,
) -> np.ndarray:
    """Draw the mesh over ``image`` (H, W, 3) uint8 with opacity ``alpha``; (H, W, 3) uint8.

    ``vertices`` (V, 3) are in the camera frame of ``intrinsics`` (3, 3), which are in
    pixels of ``image``. Pixels off the mesh are exactly those of ``image``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {image.shape}")
    image_size = (image.shape[1], image.shape[0])
    with _use_renderer(renderer, image_size) as active:
        return active.render(vertices, faces, intrinsics, color, image, alpha)


def render_silhouette(
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    renderer: MeshRenderer | None = None,
) -> np.ndarray:
    """(H, W) bool mask of the pixels covered by the mesh (arguments as :func:`render_mesh`)."""
    with _use_renderer(renderer, image_size) as active:
        return active.render_silhouette(vertices, faces, intrinsics)


def render_depth(
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    renderer: MeshRenderer | None = None,
) -> np.ndarray:
    """(H, W) float32 depth in metres, 0 off the mesh (arguments as :func:`render_mesh`)."""
    with _use_renderer(renderer, image_size) as active:
        return active.render_depth(vertices, faces, intrinsics)


def render_side_view(
    vertices: np.ndarray,
    faces: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    color: Sequence[float] = DEFAULT_COLOR,
    background: np.ndarray | None = None,
    angle_deg: float = 90.0,
    fill: float = DEFAULT_FILL,
    renderer: MeshRenderer | None = None,
) -> np.ndarray:
    """Render the mesh turned about the vertical axis through its centroid, framed.

    See :func:`side_view_transform` for the motion (apply it to joints to draw them on
    the same view). Returns what :func:`render_mesh` returns.
    """
    transform = side_view_transform(vertices, intrinsics, image_size, angle_deg, fill)
    moved = apply_transform(transform, vertices)
    return render_mesh(moved, faces, intrinsics, image_size, color, background, renderer)


def side_view_transform(
    vertices: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    angle_deg: float = 90.0,
    fill: float = DEFAULT_FILL,
) -> np.ndarray:
    """Rigid motion that turns a mesh sideways and places it where the camera frames it.

    The mesh rotates by ``angle_deg`` about the camera's vertical (y) axis through its
    centroid (right-hand rule about y pointing down: with the default 90 degrees a
    person facing the camera ends up facing image left, showing their left side), then
    moves so its bounding box is centred on the principal ray at the distance where it
    fills ``fill`` of the image.

    Args:
        vertices: (V, 3) metres in the camera frame.
        intrinsics: (3, 3) pixels.
        image_size: (width, height).
        angle_deg: rotation angle in degrees.
        fill: fraction of the width and height the mesh may fill, in (0, 1].

    Returns:
        (4, 4) matrix ``T`` with moved points ``T[:3, :3] @ p + T[:3, 3]``.
    """
    vertices = _check_points(vertices, "vertices")
    angle = np.deg2rad(angle_deg)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    centroid = vertices.mean(axis=0)
    rotated = (vertices - centroid) @ rotation.T
    translation = framing_translation(rotated, intrinsics, image_size, fill)
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = translation - rotation @ centroid
    return transform


def framing_translation(
    points: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    fill: float = DEFAULT_FILL,
) -> np.ndarray:
    """Translation (3,) that centres ``points`` (N, 3) on the principal ray, framed.

    The centre of their bounding box goes onto the principal ray at the smallest
    distance at which every point projects inside the central ``fill`` fraction of
    the image (each axis). Orientation is unchanged.
    """
    points = _check_points(points, "points")
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    distance = framing_distance(points - centre, intrinsics, image_size, fill)
    return np.array([0.0, 0.0, distance]) - centre


def framing_distance(
    points: np.ndarray,
    intrinsics: np.ndarray,
    image_size: Sequence[int],
    fill: float = DEFAULT_FILL,
) -> float:
    """Smallest distance along the principal ray at which ``points`` (N, 3) fit in view.

    ``points`` are relative to a reference point that will sit on the principal ray at
    that distance; each must then project inside the central ``fill`` fraction of the
    image (each axis) and lie beyond the near clipping plane.
    """
    points = _check_points(points, "points")
    intrinsics = _check_intrinsics(intrinsics)
    width, height = _check_image_size(image_size)
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"expected fill in (0, 1], got {fill}")
    needed = [Z_NEAR_M - points[:, 2].min()]
    for axis, size in ((0, width), (1, height)):
        focal, principal = intrinsics[axis, axis], intrinsics[axis, 2]
        room_positive = size * (1.0 + fill) / 2.0 - principal
        room_negative = principal - size * (1.0 - fill) / 2.0
        if room_positive <= 0 or room_negative <= 0:
            raise ValueError("the principal point lies outside the central fill of the image")
        coordinate = points[:, axis]
        room = np.where(coordinate >= 0, room_positive, room_negative)
        needed.append(np.max(focal * np.abs(coordinate) / room - points[:, 2]))
    return float(max(needed))


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) rigid transform to points (..., 3)."""
    transform = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3]


# OpenGL camera frame from the computer-vision one: flip y and z (a rotation).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])


def _build_scene(vertices, faces, intrinsics, color, vertex_colors=None, lights=LIGHTS):
    import pyrender
    import trimesh

    vertices = _check_points(vertices, "vertices")
    faces = _check_faces(faces, len(vertices))
    intrinsics = _check_intrinsics(intrinsics)
    if len(color) != 3:
        raise ValueError(f"expected color (r, g, b) in [0, 1], got {color}")

    mesh = trimesh.Trimesh(vertices @ _CV_TO_GL, faces, process=False)
    material = pyrender.MetallicRoughnessMaterial(
        metallicFactor=MATERIAL_METALLIC,
        roughnessFactor=MATERIAL_ROUGHNESS,
        alphaMode="OPAQUE",
        baseColorFactor=(*(float(c) for c in color), 1.0),
    )
    scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0), ambient_light=AMBIENT_LIGHT)
    if vertex_colors is None:
        pyrender_mesh = pyrender.Mesh.from_trimesh(mesh, material=material, smooth=True)
    else:
        vertex_colors = np.asarray(vertex_colors, dtype=np.float32)
        if vertex_colors.shape != vertices.shape:
            raise ValueError(
                f"expected vertex_colors of shape (V, 3) = {vertices.shape}, "
                f"got {vertex_colors.shape}"
            )
        # The shader multiplies the base colour by COLOR_0; from_trimesh drops vertex
        # colours when given a material, so build the primitive directly.
        rgba = np.concatenate([vertex_colors, np.ones_like(vertex_colors[:, :1])], axis=1)
        primitive = pyrender.Primitive(
            positions=mesh.vertices,
            normals=mesh.vertex_normals,
            indices=faces,
            color_0=rgba,
            material=material,
        )
        pyrender_mesh = pyrender.Mesh([primitive])
    mesh_node = scene.add(pyrender_mesh)
    _add_camera(scene, intrinsics)
    for direction, intensity in lights:
        light = pyrender.DirectionalLight(color=np.ones(3), intensity=float(intensity))
        scene.add(light, pose=_light_pose(_CV_TO_GL @ np.asarray(direction, dtype=np.float64)))
    return scene, mesh_node


def _build_label_scene(vertices, faces, face_labels, intrinsics):
    """A scene with one node per distinct face label and the {node: RGB} map that packs
    each label into a segmentation colour (low byte in red)."""
    import pyrender

    vertices = _check_points(vertices, "vertices")
    faces = _check_faces(faces, len(vertices))
    intrinsics = _check_intrinsics(intrinsics)
    face_labels = np.asarray(face_labels)
    if face_labels.shape != (len(faces),) or not np.issubdtype(face_labels.dtype, np.integer):
        raise ValueError(
            f"expected integer face_labels of shape (F,) = ({len(faces)},), "
            f"got {face_labels.shape} {face_labels.dtype}"
        )
    if face_labels.size and (face_labels.min() < 1 or face_labels.max() > MAX_LABEL):
        raise ValueError(f"expected face_labels in [1, {MAX_LABEL}]; 0 means background")
    positions = (vertices @ _CV_TO_GL).astype(np.float32)
    scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 0.0))
    node_colors = {}
    for label in np.unique(face_labels):
        # Upload only the vertices this label's faces use.
        used, local_faces = np.unique(faces[face_labels == label], return_inverse=True)
        primitive = pyrender.Primitive(
            positions=positions[used],
            indices=local_faces.reshape(-1, 3),
            mode=pyrender.GLTF.TRIANGLES,
        )
        node = scene.add(pyrender.Mesh([primitive]))
        node_colors[node] = np.array([(int(label) >> shift) & 0xFF for shift in (0, 8, 16)])
    _add_camera(scene, intrinsics)
    return scene, node_colors


def _add_camera(scene, intrinsics: np.ndarray) -> None:
    import pyrender

    camera = pyrender.IntrinsicsCamera(
        fx=intrinsics[0, 0],
        fy=intrinsics[1, 1],
        cx=intrinsics[0, 2],
        cy=intrinsics[1, 2],
        znear=Z_NEAR_M,
        zfar=Z_FAR_M,
    )
    scene.add(camera, pose=np.eye(4))


def _light_pose(direction_gl: np.ndarray) -> np.ndarray:
    """Pose of a pyrender directional light (it shines along its -z) travelling along
    ``direction_gl`` in the OpenGL camera frame."""
    backward = -direction_gl / np.linalg.norm(direction_gl)
    helper = np.array([0.0, 1.0, 0.0]) if abs(backward[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    right = np.cross(helper, backward)
    right /= np.linalg.norm(right)
    up = np.cross(backward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, up, backward], axis=1)
    return pose


@contextmanager
def _use_renderer(
    renderer: MeshRenderer | None, image_size: Sequence[int]
) -> Iterator[MeshRenderer]:
    """The given renderer (checked for size), or a temporary one closed afterwards."""
    image_size = _check_image_size(image_size)
    if renderer is not None:
        if renderer.image_size != image_size:
            raise ValueError(
                f"renderer is {renderer.image_size} (width, height) but the image is "
                f"{image_size}; make a MeshRenderer of the image's size"
            )
        yield renderer
        return
    with MeshRenderer(image_size) as temporary:
        yield temporary


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"expected image_size (width, height) > 0, got {image_size}")
    return int(image_size[0]), int(image_size[1])


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        hint = "; drop the batch dimension" if points.ndim == 3 else ""
        raise ValueError(f"expected {name} of shape (V, 3), got {points.shape}{hint}")
    return points


def _check_faces(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected faces of shape (F, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(f"faces index vertices outside [0, {num_vertices})")
    return faces


def _check_intrinsics(intrinsics: np.ndarray) -> np.ndarray:
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.shape != (3, 3):
        raise ValueError(f"expected intrinsics of shape (3, 3), got {intrinsics.shape}")
    if intrinsics[0, 1] != 0 or not np.allclose(intrinsics[2], (0.0, 0.0, 1.0)):
        raise ValueError(
            "expected intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), "
            f"got {intrinsics.tolist()}"
        )
    return intrinsics


def _check_background(background: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    background = np.asarray(background)
    width, height = image_size
    if background.shape != (height, width, 3) or background.dtype != np.uint8:
        raise ValueError(
            f"expected background of shape (H, W, 3) = ({height}, {width}, 3) uint8, "
            f"got {background.shape} {background.dtype}"
        )
    return background
