"""Vocabulary every part agrees on (see docs/DESIGN.md): tasks, instructions, action/proprio layout, timing."""
TASKS = ('reach', 'push', 'pick_and_place')
INSTRUCTIONS = {
    'reach': 'reach the red target',
    'push': 'push the green cube to the red target',
    'pick_and_place': 'pick up the green cube and place it on the red target',
}
ACTION_NAMES = ('ee_dx', 'ee_dy', 'ee_dz', 'gripper')
PROPRIO_NAMES = ('ee_x', 'ee_y', 'ee_z', 'ee_vx', 'ee_vy', 'ee_vz', 'finger_width')
ACTION_DIM = len(ACTION_NAMES)
PROPRIO_DIM = len(PROPRIO_NAMES)
CONTROL_DT = 0.04  # s; one panda-gym step, 25 Hz
FAILURE_TYPES = ('grasp_failure', 'drop', 'collision', 'misalignment', 'timeout')
DEFAULT_CHECKPOINT = 'models/vla_v13'  # the shipped multi-task policy: the nodes' and in-process runs' default
