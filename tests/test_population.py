"""Population configs: members of grids and zips, forks, member configs, selection, errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from configs import tiny
from srrgan_jax import config_check
from srrgan_jax import errors
from srrgan_jax import population

REPO = Path(__file__).resolve().parent.parent


def _config(**swept):
  config = tiny.get_config()
  for name, values in swept.items():
    config.population[name] = values
  return config


def test_no_population_is_a_single_run():
  config = tiny.get_config()
  assert population.members(config) == [] and population.size(config) == 0
  assert population.fork_phase(config) is None
  population.check(config)


def test_grid_enumerates_every_combination_in_field_order():
  config = _config(gan_weight=(0.01, 0.1), pixel_weight=(10, 20, 30))
  got = [(m.index, m.values) for m in population.members(config)]
  # pixel_weight comes before gan_weight in SWEEPABLE order, whatever the flag order.
  assert got == [
      (0, {'loss.pixel_weight': 10.0, 'loss.gan_weight': 0.01}),
      (1, {'loss.pixel_weight': 10.0, 'loss.gan_weight': 0.1}),
      (2, {'loss.pixel_weight': 20.0, 'loss.gan_weight': 0.01}),
      (3, {'loss.pixel_weight': 20.0, 'loss.gan_weight': 0.1}),
      (4, {'loss.pixel_weight': 30.0, 'loss.gan_weight': 0.01}),
      (5, {'loss.pixel_weight': 30.0, 'loss.gan_weight': 0.1}),
  ]
  assert population.members(config)[3].name == 'pixel_weight=20,gan_weight=0.1'
  assert population.fork_phase(config) == 3


def test_zip_pairs_the_ith_values():
  config = _config(gan_weight=(0.01, 0.1), g_learning_rate=(1e-4, 5e-5))
  config.population.mode = 'zip'
  assert [m.values for m in population.members(config)] == [
      {'loss.gan_weight': 0.01, 'phase3.g_learning_rate': 1e-4},
      {'loss.gan_weight': 0.1, 'phase3.g_learning_rate': 5e-5}]


def test_a_phase2_sweep_forks_at_phase_2():
  config = _config(phase2_perceptual_weight=(0.0, 1e-3), gan_weight=(0.1,))
  assert population.fork_phase(config) == 2 and population.size(config) == 2


def test_member_config_is_the_single_run_with_the_members_values():
  config = _config(gan_weight=(0.01, 0.1), d_learning_rate=(1e-5,))
  member = population.members(config)[1]
  single = population.member_config(config, member)
  assert single.loss.gan_weight == 0.1 and single.phase3.d_learning_rate == 1e-5
  assert population.members(single) == []
  # Everything else unchanged, and the population's own config untouched.
  assert single.loss.pixel_weight == config.loss.pixel_weight
  assert config.population.gan_weight == (0.01, 0.1)
  config_check.check_config(single)


def test_a_phase_is_affected_only_by_the_swept_settings_it_reads():
  single, swept = _config(), _config(gan_weight=(0.01, 0.1))
  affects = {phase: [f for f in ('loss.phase2_perceptual_weight', 'population.gan_weight',
                                 'loss.gan_weight', 'phase3.d_learning_rate', 'loss.real_label')
                     if population.affects_phase(single, f, phase)] for phase in (1, 2, 3)}
  assert affects == {
      1: ['loss.real_label'],
      2: ['loss.phase2_perceptual_weight', 'loss.real_label'],
      3: ['population.gan_weight', 'loss.gan_weight', 'phase3.d_learning_rate',
          'loss.real_label']}
  # While gan_weight is swept the members bring their own: loss.gan_weight is read nowhere.
  assert not population.affects_phase(swept, 'loss.gan_weight', 3)
  assert population.affects_phase(swept, 'loss.pixel_weight', 3)


@pytest.mark.parametrize('spec,index', [
    ('2', 2), ('gan_weight=0.1', 1), ('loss.gan_weight=0.10', 1),
    ('gan_weight=1e-2', 0), (' 0 ', 0)])
def test_select_by_index_or_by_weights(spec, index):
  config = _config(gan_weight=(0.01, 0.1, 0.5))
  assert population.select(config, spec).index == index


@pytest.mark.parametrize('swept,spec,message', [
    ({'gan_weight': (0.01, 0.1)}, '2', 'members 0 to 1 (0: gan_weight=0.01; 1: gan_weight=0.1)'),
    ({'gan_weight': (0.01, 0.1)}, 'gan_weight=0.2', 'no member has these values'),
    ({'gan_weight': (0.01, 0.1), 'pixel_weight': (1, 2)}, 'gan_weight=0.1',
     '2 members have these values'),
    ({'gan_weight': (0.01, 0.1)}, 'lr=0.1', 'field=value pairs of swept fields'),
    ({'gan_weight': (0.01, 0.1)}, 'gan_weight=big', 'field=value pairs of swept fields'),
    ({}, '0', 'this run has no population'),
])
def test_select_names_the_spec_and_the_members_when_it_fails(swept, spec, message):
  with pytest.raises(errors.ConfigError, match='--member') as raised:
    population.select(_config(**swept), spec)
  assert message in str(raised.value)


@pytest.mark.parametrize('change,message', [
    ({'gan_weight': ()}, 'population.gan_weight=() is not valid: it must be a non-empty tuple'),
    ({'gan_weight': (0.1, -1.0)}, 'population.gan_weight=(0.1, -1.0) is not valid: it must '
     'be a tuple of numbers >= 0'),
    ({'g_learning_rate': (0.0,)}, 'a tuple of numbers > 0'),
    ({'pixel_weight': (1.0, 1.0)}, 'a tuple of distinct values'),
    ({'perceptual_weight': ('a',)}, 'a tuple of numbers >= 0'),
    ({'mode': 'cross'}, "population.mode='cross' is not valid: it must be one of 'grid', 'zip'"),
    ({'mode': 'zip', 'gan_weight': (0.1, 0.2), 'pixel_weight': (1.0,)},
     "used with swept tuples of one length (got pixel_weight: 1, gan_weight: 2)"),
    ({'member_devices': 2, 'gan_weight': (0.1, 0.2, 0.3)},
     'population.member_devices=2 is not valid: it must be a divisor of the population size '
     '(3 members)'),
    ({'member_devices': 2}, 'it must be 1 when no field is swept'),
])
def test_bad_populations_name_the_field(change, message):
  config = _config(**change)
  with pytest.raises(errors.ConfigError) as raised:
    config_check.check_config(config)
  assert message in str(raised.value)


def test_a_swept_phase_must_run():
  config = _config(gan_weight=(0.1, 0.2))
  config.phases = (1, 2)
  with pytest.raises(errors.ConfigError, match='population.gan_weight=.*config.phases=\\(1, '
                     '2\\) runs no phase 3'):
    population.check(config)


def _train(*args):
  return subprocess.run(
      [sys.executable, str(REPO / 'train.py'), f'--config={REPO / "configs" / "tiny.py"}',
       *args, '--print_config'], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_command_line_parses_tuples_and_rejects_bad_sweeps_in_one_line(tmp_path):
  ok = _train("--config.population.gan_weight=(0.01,0.05,0.1)",
              '--config.population.pixel_weight=5')
  assert ok.returncode == 0, ok.stderr
  assert '- 0.05' in ok.stdout  # Printed as a YAML list.
  unknown = _train('--config.population.gan_weights=(0.1,)')
  assert unknown.returncode != 0 and 'Traceback' not in unknown.stderr
  assert unknown.stderr.strip().startswith(
      'train: error: config field population.gan_weights does not exist; block population '
      'has: d_learning_rate, g_learning_rate, gan_weight,')
  empty = subprocess.run(
      [sys.executable, str(REPO / 'train.py'), f'--config={REPO / "configs" / "tiny.py"}',
       '--config.population.gan_weight=()', f'--workdir={tmp_path / "run"}'],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert empty.returncode == 1 and not (tmp_path / 'run').exists()
  assert empty.stderr.strip() == (
      'train: error: config field population.gan_weight=() is not valid: it must be a '
      'non-empty tuple of values, e.g. "(0.01,0.1)"; leave it unset to not sweep it.')
