"""Device mesh, shardings, multi-host start-up and global batch assembly.

A 2-D mesh ('member', 'data'). Data parallelism over 'data': batches are split
along their first axis, parameters are replicated. Each host feeds only its own
rows; `global_batch` stitches them into one global array. A population of
members (runs that differ in loss weights) is split over 'member' along its
leading axis; a single run has a 'member' axis of size 1, so its data axis
spans every device of every host.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from srrgan_jax import errors

DATA_AXIS = 'data'
MEMBER_AXIS = 'member'


def initialize_distributed(dist_config) -> None:
  """Starts JAX's multi-host runtime when `config.distributed.initialize` is set.

  Empty/auto values are left to JAX, which detects SLURM, TPU pods, Open MPI and
  Kubernetes. Must run before any other JAX call; a no-op if already initialised.
  """
  if not dist_config.initialize:
    return
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  if dist_config.coordinator_address:
    kwargs['coordinator_address'] = dist_config.coordinator_address
  if dist_config.num_processes > 0:
    kwargs['num_processes'] = dist_config.num_processes
  if dist_config.process_id >= 0:
    kwargs['process_id'] = dist_config.process_id
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:  # No cluster environment JAX recognises.
    raise errors.ConfigError(
        f'jax.distributed could not start ({e}). Outside SLURM, Open MPI, '
        'Kubernetes and TPU pods give every process '
        '--config.distributed.coordinator_address=HOST:PORT (of process 0), '
        '--config.distributed.num_processes=N and --config.distributed.process_id=I.'
    ) from e
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def is_main_process() -> bool:
  """True on the one process that writes logs, images and plots."""
  return jax.process_index() == 0


def sync_processes(name: str) -> None:
  """Waits until every process reaches the point `name` (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def make_mesh(devices=None, member_devices: int = 1) -> jax.sharding.Mesh:
  """A ('member', 'data') mesh over all (or the given) devices.

  `member_devices` groups of devices along 'member' (1: every device holds
  every member). All devices are ordered by process, so that with one group
  process p's devices hold rows [p*b, (p+1)*b) of every global batch: the rows
  its data loader builds. Several groups need one process: each group takes
  the whole batch.
  """
  devices = (sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
             if devices is None else list(devices))
  if len(devices) % member_devices:
    raise errors.ConfigError(
        f'population.member_devices={member_devices} does not divide the '
        f'{len(devices)} devices; use a divisor of {len(devices)}.')
  if member_devices > 1 and jax.process_count() > 1:
    raise errors.ConfigError(
        f'population.member_devices={member_devices} needs a single process (each '
        f'device group takes the whole batch); with {jax.process_count()} processes '
        'use population.member_devices=1.')
  grid = np.asarray(devices).reshape(member_devices, len(devices) // member_devices)
  return jax.sharding.Mesh(grid, (MEMBER_AXIS, DATA_AXIS))


def batch_sharding(mesh) -> NamedSharding:
  """Split the leading (batch) axis over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  """A full copy on every device."""
  return NamedSharding(mesh, P())


def member_sharding(mesh) -> NamedSharding:
  """Split the leading (member) axis over 'member'; replicated over 'data'."""
  return NamedSharding(mesh, P(MEMBER_AXIS))


def member_batch_sharding(mesh) -> NamedSharding:
  """Members over 'member', then each member's batch over 'data'."""
  return NamedSharding(mesh, P(MEMBER_AXIS, DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh, what: str = 'data.batch_size') -> None:
  """Raises if the global batch cannot be split evenly over the devices and hosts."""
  devices = mesh.shape[DATA_AXIS]
  if global_batch_size % devices:
    groups = mesh.shape[MEMBER_AXIS]
    where = f' of each of the {groups} member groups' if groups > 1 else ''
    raise errors.ConfigError(
        f'{what}={global_batch_size} is not divisible by the {devices} devices{where} '
        f'({jax.process_count()} process(es)); set --config.{what} to a multiple '
        f'of {devices}.')


def put_replicated(tree, mesh):
  """Places a host pytree (identical on every process) replicated over `mesh`."""
  return _put(tree, replicated(mesh))


def put_members(tree, mesh):
  """Places a host pytree with a leading member axis split over 'member'."""
  return _put(tree, member_sharding(mesh))


def _put(tree, sharding):
  """Places a host pytree (identical on every process) with `sharding`."""

  def put(x):
    x = np.asarray(x)
    # make_array_from_callback also works when the mesh spans several hosts.
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def global_batch(local_batch, mesh):
  """Assembles each process's rows (a pytree of numpy arrays) into global arrays."""
  sharding = batch_sharding(mesh)

  def assemble(x):
    x = np.asarray(x)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(assemble, local_batch)


def process_rows(global_rows: int) -> slice:
  """This process's share of a batch of `global_rows` rows that every host holds."""
  per_process = global_rows // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def gather_rows(x) -> np.ndarray:
  """A batch-sharded array as one numpy array on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(tree):
  """Fetches replicated (or fully addressable) arrays to numpy on every process."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))  # Replicated: any local copy.
    return np.asarray(jax.device_get(x))

  return jax.tree.map(fetch, tree)
