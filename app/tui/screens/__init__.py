"""The screens: main, approval (modal), evidence, tutor, policy."""
