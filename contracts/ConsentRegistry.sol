// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IConsentRegistry} from "./IConsentRegistry.sol";

/**
 * @title Vellum consent registry
 * @notice See {IConsentRegistry} and `docs/consent.md`.
 *
 * Storage: a consent is its patient (one slot), a packed header (status, lock, rule count) and
 * up to 32 rules, each three slots (packed header, class mask, data period) plus its actors and
 * tokens. Rules beyond the rule count are stale and never read. A patient's consent ids are kept
 * in the order first written, so {decide} needs no sorting; the patient's wallet, nonce and
 * consent counts share one slot.
 */
contract ConsentRegistry is IConsentRegistry, AccessControl, EIP712 {
    /// @inheritdoc IConsentRegistry
    bytes32 public constant CUSTODIAN_ROLE = keccak256("CUSTODIAN_ROLE");
    /// @inheritdoc IConsentRegistry
    bytes32 public constant APPROVER_ROLE = keccak256("APPROVER_ROLE");

    /// @notice The root and at most 31 nested rules.
    uint256 public constant MAX_RULES = 32;
    /// @notice Actors one rule may name.
    uint256 public constant MAX_RULE_ACTORS = 8;
    /// @notice Data tokens one rule may hold.
    uint256 public constant MAX_RULE_TOKENS = 32;
    /// @notice Consents one patient may have in force at once.
    uint256 public constant MAX_ACTIVE_CONSENTS = 64;
    /// @notice Identities one request may present to {decide}.
    uint256 public constant MAX_REQUEST_ACTORS = 4;
    /// @notice The purpose indexes of TREAT (treatment) and ETREAT (emergency treatment).
    uint8 public constant TREAT = 0;
    uint8 public constant ETREAT = 1;
    /// @notice Token kinds (a token's first byte): custodian 1 … data 6.
    uint8 public constant TOKEN_KIND_MAX = 6;
    uint8 private constant KIND_CLASS = 3;

    bytes32 public constant REVOKE_TYPEHASH = keccak256("Revoke(bytes32 consentId,uint256 nonce,uint256 deadline)");
    bytes32 public constant RULE_TYPEHASH =
        keccak256(
            "Rule(uint8 parent,bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end,uint64 dataStart,uint64 dataEnd,bytes32[] tokens)"
        );
    bytes32 public constant GRANT_TYPEHASH =
        keccak256(
            "Grant(bytes32 consentId,bytes32 patient,Rule[] rules,uint256 nonce,uint256 deadline)"
            "Rule(uint8 parent,bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end,uint64 dataStart,uint64 dataEnd,bytes32[] tokens)"
        );

    uint64 private constant ETREAT_BIT = uint64(1) << ETREAT;
    uint64 private constant TREATMENT_BITS = (uint64(1) << TREAT) | (uint64(1) << ETREAT);

    struct StoredRule {
        bool permit;
        uint8 parent;
        uint16 actions;
        uint64 purposes;
        uint64 start;
        uint64 end;
        uint256 classes;
        uint64 dataStart;
        uint64 dataEnd;
        bytes32[] actors;
        bytes32[] tokens;
    }

    struct StoredConsent {
        bytes32 patient;
        Status status;
        bool lockedByPatient;
        uint8 ruleCount;
        mapping(uint256 => StoredRule) rules;
    }

    /// Everything kept per patient, in one slot.
    struct PatientState {
        address wallet;
        /// consents ever written (the length of the patient's id list)
        uint32 count;
        /// consents in force
        uint32 active;
        /// the next signature's nonce
        uint32 nonce;
    }

    struct Approval {
        bool approved;
        bool emergency;
    }

    /// What {decide} derives from a request once.
    struct Context {
        uint256 classBit;
        uint256 actionBit;
        /// bit j set when request actor j is approved
        uint256 approvedMask;
        /// ETREAT among the purposes and some request actor approved with the emergency flag
        bool breakGlass;
    }

    /// A consent's verdict.
    struct Verdict {
        bool found;
        bool permit;
        /// a deny whose path names purposes including ETREAT (break-glass does not override it)
        bool namesEmergency;
    }

    mapping(bytes32 id => StoredConsent) private _consents;
    mapping(bytes32 patient => PatientState) private _patients;
    /// A patient's consent ids in the order first written: index → id.
    mapping(bytes32 patient => mapping(uint256 index => bytes32 id)) private _consentAt;
    mapping(bytes32 actor => Approval) private _approvals;
    Model private _model;
    bool private _modelSet;

    /**
     * @notice Deploys the registry with `admin` as its administrator and, unless it is the zero
     * address, `custodian` holding both {CUSTODIAN_ROLE} and {APPROVER_ROLE}.
     *
     * Requirements:
     *
     * - `admin` must not be the zero address ({ConsentRegistryZeroAdmin}).
     */
    constructor(address admin, address custodian) EIP712("VellumConsentRegistry", "2") {
        if (admin == address(0)) revert ConsentRegistryZeroAdmin();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (custodian != address(0)) {
            _grantRole(CUSTODIAN_ROLE, custodian);
            _grantRole(APPROVER_ROLE, custodian);
        }
    }

    // ---------------------------------------------------------------- model

    /// @inheritdoc IConsentRegistry
    function setModel(Model newModel, bool force) external onlyRole(CUSTODIAN_ROLE) {
        if (_modelSet) {
            if (_model == newModel) return;
            if (!force) revert ConsentModelChange(_model);
        }
        emit ConsentModelSet(newModel, _modelSet);
        _model = newModel;
        _modelSet = true;
    }

    /// @inheritdoc IConsentRegistry
    function model() external view returns (Model current, bool set) {
        return (_model, _modelSet);
    }

    // ---------------------------------------------------------------- actors and wallets

    /// @inheritdoc IConsentRegistry
    function approveActor(bytes32 actor, bool emergency) external onlyRole(APPROVER_ROLE) {
        if (actor == bytes32(0)) revert ConsentZeroKey();
        _approvals[actor] = Approval(true, emergency);
        emit ActorApproved(actor, emergency);
    }

    /// @inheritdoc IConsentRegistry
    function revokeApproval(bytes32 actor) external onlyRole(APPROVER_ROLE) {
        delete _approvals[actor];
        emit ActorApprovalRevoked(actor);
    }

    /// @inheritdoc IConsentRegistry
    function approvalOf(bytes32 actor) external view returns (bool approved, bool emergency) {
        Approval storage a = _approvals[actor];
        return (a.approved, a.emergency);
    }

    /// @inheritdoc IConsentRegistry
    function registerWallet(bytes32 patient, address wallet) external onlyRole(CUSTODIAN_ROLE) {
        if (patient == bytes32(0)) revert ConsentZeroKey();
        _patients[patient].wallet = wallet;
        emit WalletRegistered(patient, wallet);
    }

    /// @inheritdoc IConsentRegistry
    function walletOf(bytes32 patient) external view returns (address) {
        return _patients[patient].wallet;
    }

    /// @inheritdoc IConsentRegistry
    function nonces(bytes32 patient) external view returns (uint256) {
        return _patients[patient].nonce;
    }

    // ---------------------------------------------------------------- access requests

    /// @inheritdoc IConsentRegistry
    function requestAccess(bytes32 id, bytes32 patient, bytes32 requester) external onlyRole(CUSTODIAN_ROLE) {
        if (id == bytes32(0) || patient == bytes32(0) || requester == bytes32(0)) revert ConsentZeroKey();
        emit AccessRequested(id, patient, requester);
    }

    /// @inheritdoc IConsentRegistry
    function answerRequest(bytes32 id, bytes32 patient, bool approved) external onlyRole(CUSTODIAN_ROLE) {
        if (id == bytes32(0) || patient == bytes32(0)) revert ConsentZeroKey();
        emit AccessRequestAnswered(id, patient, approved);
    }

    // ---------------------------------------------------------------- consents

    /// @inheritdoc IConsentRegistry
    function putConsent(bytes32 id, bytes32 patient, Rule[] calldata rules) external onlyRole(CUSTODIAN_ROLE) {
        _put(id, patient, rules, false);
    }

    /// @inheritdoc IConsentRegistry
    function revokeConsent(bytes32 id) external onlyRole(CUSTODIAN_ROLE) {
        StoredConsent storage c = _consents[id];
        Status status = c.status;
        if (status == Status.None) revert ConsentUnknown(id);
        if (status == Status.Revoked) return;
        _deactivate(c);
        emit ConsentRevoked(id, c.patient, false);
    }

    /// @inheritdoc IConsentRegistry
    function revokeBySig(bytes32 id, uint256 nonce, uint256 deadline, bytes calldata signature) external {
        if (block.timestamp > deadline) revert ConsentSignatureExpired(deadline);
        StoredConsent storage c = _consents[id];
        if (c.status == Status.None) revert ConsentUnknown(id);
        bytes32 patient = c.patient;
        _useSignature(patient, nonce, keccak256(abi.encode(REVOKE_TYPEHASH, id, nonce, deadline)), signature);
        if (c.status == Status.Active) _deactivate(c);
        c.lockedByPatient = true;
        emit ConsentRevoked(id, patient, true);
    }

    /// @inheritdoc IConsentRegistry
    function grantBySig(
        bytes32 id,
        bytes32 patient,
        Rule[] calldata rules,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert ConsentSignatureExpired(deadline);
        bytes32 structHash = keccak256(abi.encode(GRANT_TYPEHASH, id, patient, _hashRules(rules), nonce, deadline));
        _useSignature(patient, nonce, structHash, signature);
        _put(id, patient, rules, true);
    }

    /// @inheritdoc IConsentRegistry
    function recordEmergencyAccess(
        bytes32 patient,
        bytes32 actor,
        uint8 resourceClass,
        uint8 purpose
    ) external onlyRole(CUSTODIAN_ROLE) {
        emit EmergencyAccess(patient, actor, resourceClass, purpose);
    }

    /// @inheritdoc IConsentRegistry
    function consentOf(
        bytes32 id
    ) external view returns (bytes32 patient, Status status, bool lockedByPatient, Rule[] memory rules) {
        StoredConsent storage c = _consents[id];
        uint256 n = c.ruleCount;
        rules = new Rule[](n);
        for (uint256 i = 0; i < n; i++) {
            StoredRule storage r = c.rules[i];
            rules[i] = Rule(
                r.parent,
                r.permit,
                r.actors,
                r.classes,
                r.actions,
                r.purposes,
                r.start,
                r.end,
                r.dataStart,
                r.dataEnd,
                r.tokens
            );
        }
        return (c.patient, c.status, c.lockedByPatient, rules);
    }

    /// @inheritdoc IConsentRegistry
    function consentsOf(bytes32 patient) external view returns (bytes32[] memory ids) {
        mapping(uint256 => bytes32) storage at = _consentAt[patient];
        uint256 count = _patients[patient].count;
        ids = new bytes32[](count);
        for (uint256 k = 0; k < count; k++) ids[k] = at[k];
    }

    // ---------------------------------------------------------------- decision

    /// @inheritdoc IConsentRegistry
    function decide(Request calldata request) public view returns (Decision decision, bytes32 consentId) {
        uint256 actorCount = request.actors.length;
        if (actorCount > MAX_REQUEST_ACTORS) revert ConsentTooManyRequestActors(actorCount, MAX_REQUEST_ACTORS);
        Context memory ctx = Context({
            classBit: uint256(1) << request.resourceClass,
            actionBit: uint256(1) << request.action,
            approvedMask: 0,
            breakGlass: false
        });
        bool emergency;
        for (uint256 j = 0; j < actorCount; j++) {
            Approval storage a = _approvals[request.actors[j]];
            if (a.approved) {
                ctx.approvedMask |= uint256(1) << j;
                if (a.emergency) emergency = true;
            }
        }
        ctx.breakGlass = emergency && (request.purposes & ETREAT_BIT) != 0;

        bytes32 permitting;
        bool overridden; // a deny was set aside by break-glass: access is then break-glass, whatever permits
        mapping(uint256 => bytes32) storage ids = _consentAt[request.patient];
        uint256 count = _patients[request.patient].count;
        for (uint256 k = 0; k < count; k++) {
            bytes32 id = ids[k];
            StoredConsent storage c = _consents[id];
            if (c.status != Status.Active) continue;
            Verdict memory v = _verdict(c, request, ctx);
            if (!v.found) continue;
            if (!v.permit) {
                // Break-glass overrides a deny unless the deny names ETREAT explicitly.
                if (!ctx.breakGlass || v.namesEmergency) return (Decision.Deny, id);
                overridden = true;
            } else if (permitting == bytes32(0)) {
                permitting = id;
            }
        }
        if (overridden) return (Decision.BreakGlass, bytes32(0));
        if (permitting != bytes32(0)) return (Decision.Permit, permitting);
        if (
            _model == Model.OptOut &&
            ctx.approvedMask != 0 &&
            request.purposes != 0 &&
            (request.purposes & ~TREATMENT_BITS) == 0
        ) return (Decision.Implied, bytes32(0));
        if (ctx.breakGlass) return (Decision.BreakGlass, bytes32(0));
        if (ctx.approvedMask == 0) return (Decision.ActorNotApproved, bytes32(0));
        return (Decision.NoConsent, bytes32(0));
    }

    /// @inheritdoc IConsentRegistry
    function isPermitted(Request calldata request) external view returns (bool) {
        (Decision decision, ) = decide(request);
        return decision == Decision.Permit || decision == Decision.BreakGlass || decision == Decision.Implied;
    }

    /// @notice ERC-165: also answers for {IConsentRegistry}.
    function supportsInterface(bytes4 interfaceId) public view virtual override returns (bool) {
        return interfaceId == type(IConsentRegistry).interfaceId || super.supportsInterface(interfaceId);
    }

    // ---------------------------------------------------------------- internals

    /**
     * The verdict of consent `c`: its most deeply nested matching rules decide, deny winning among
     * equals. Rules come after their parents, so one pass sees each parent's match first.
     */
    function _verdict(
        StoredConsent storage c,
        Request calldata request,
        Context memory ctx
    ) private view returns (Verdict memory v) {
        uint256 n = c.ruleCount;
        uint256 matched; // bit i: rule i matches
        uint256 named; // bit i: a rule on rule i's path names ETREAT among its purposes
        uint8[MAX_RULES] memory depth;
        uint256 best;
        for (uint256 i = 0; i < n; i++) {
            StoredRule storage r = c.rules[i];
            uint256 parent = r.parent;
            if (i != 0 && (matched >> parent) & 1 == 0) continue;
            if (!_matches(r, request, ctx)) continue;
            matched |= uint256(1) << i;
            uint256 d = i == 0 ? 0 : uint256(depth[parent]) + 1;
            depth[i] = uint8(d);
            bool names = (r.purposes & ETREAT_BIT) != 0 || (i != 0 && (named >> parent) & 1 == 1);
            if (names) named |= uint256(1) << i;
            if (!v.found || d > best) {
                v = Verdict(true, r.permit, !r.permit && names);
                best = d;
            } else if (d == best && !r.permit) {
                v.namesEmergency = v.permit ? names : (v.namesEmergency || names);
                v.permit = false;
            }
        }
    }

    function _matches(StoredRule storage r, Request calldata request, Context memory ctx) private view returns (bool) {
        return _inBounds(r, request, ctx) && _tokensMatch(r, request.facts, ctx.classBit) && _actorMatches(r, request.actors, ctx);
    }

    /// Period, data period, action and purposes.
    function _inBounds(StoredRule storage r, Request calldata request, Context memory ctx) private view returns (bool) {
        uint64 t = request.time;
        if (r.start != 0 && t < r.start) return false;
        if (r.end != 0 && t > r.end) return false;
        uint64 dt = request.dataTime;
        if (r.dataStart != 0 && dt < r.dataStart) return false;
        if (r.dataEnd != 0 && dt > r.dataEnd) return false;
        if (r.actions != 0 && uint256(r.actions) & ctx.actionBit == 0) return false;
        if (r.purposes != 0 && r.purposes & request.purposes == 0) return false;
        return true;
    }

    /// Data tokens: per kind present, one among the facts; class tokens or'ed with the class mask.
    function _tokensMatch(StoredRule storage r, bytes32[] calldata facts, uint256 classBit) private view returns (bool) {
        bytes32[] storage tokens = r.tokens;
        uint256 present;
        uint256 found;
        for (uint256 i = 0; i < tokens.length; i++) {
            bytes32 token = tokens[i];
            uint256 kindBit = uint256(1) << (uint256(token) >> 248);
            present |= kindBit;
            if (found & kindBit != 0) continue;
            for (uint256 f = 0; f < facts.length; f++) {
                if (facts[f] == token) {
                    found |= kindBit;
                    break;
                }
            }
        }
        uint256 classKind = uint256(1) << KIND_CLASS;
        uint256 classes = r.classes;
        if ((classes != 0 || present & classKind != 0) && classes & classBit == 0 && found & classKind == 0) return false;
        return (present & ~classKind) & ~found == 0;
    }

    /// Some request actor is named (or none is required); for a permit, an approved one.
    function _actorMatches(StoredRule storage r, bytes32[] calldata actors, Context memory ctx) private view returns (bool) {
        bool permit = r.permit;
        uint256 eligible = permit ? ctx.approvedMask : type(uint256).max;
        bytes32[] storage ruleActors = r.actors;
        uint256 m = ruleActors.length;
        if (m == 0) return !permit || eligible != 0;
        for (uint256 j = 0; j < actors.length; j++) {
            if (eligible & (uint256(1) << j) == 0) continue;
            bytes32 actor = actors[j];
            for (uint256 i = 0; i < m; i++) if (ruleActors[i] == actor) return true;
        }
        return false;
    }

    function _put(bytes32 id, bytes32 patient, Rule[] calldata rules, bool bySignature) private {
        if (id == bytes32(0) || patient == bytes32(0)) revert ConsentZeroKey();
        uint256 n = rules.length;
        if (n == 0) revert ConsentNoRules();
        if (n > MAX_RULES) revert ConsentTooManyRules(n, MAX_RULES);

        StoredConsent storage c = _consents[id];
        PatientState storage p = _patients[patient];
        Status status = c.status;
        if (status == Status.None) {
            c.patient = patient;
            uint32 count = p.count;
            _consentAt[patient][count] = id;
            p.count = count + 1;
        } else if (c.patient != patient) {
            revert ConsentPatientMismatch(id);
        }
        if (!bySignature && c.lockedByPatient) revert ConsentLockedByPatient(id);
        if (status != Status.Active) {
            uint32 active = p.active;
            if (active >= MAX_ACTIVE_CONSENTS) revert ConsentTooManyConsents(patient, MAX_ACTIVE_CONSENTS);
            p.active = active + 1;
        }

        for (uint256 i = 0; i < n; i++) {
            Rule calldata rule = rules[i];
            uint256 actorCount = rule.actors.length;
            if (actorCount > MAX_RULE_ACTORS) revert ConsentTooManyActors(i, actorCount, MAX_RULE_ACTORS);
            uint256 tokenCount = rule.tokens.length;
            if (tokenCount > MAX_RULE_TOKENS) revert ConsentTooManyTokens(i, tokenCount, MAX_RULE_TOKENS);
            if (i != 0 && rule.parent >= i) revert ConsentBadRule(i);
            for (uint256 k = 0; k < tokenCount; k++) {
                uint256 kind = uint256(rule.tokens[k]) >> 248;
                if (kind == 0 || kind > TOKEN_KIND_MAX) revert ConsentBadRule(i);
            }
            StoredRule storage r = c.rules[i];
            r.permit = rule.permit;
            r.parent = i == 0 ? 0 : rule.parent;
            r.actions = rule.actions;
            r.purposes = rule.purposes;
            r.start = rule.start;
            r.end = rule.end;
            r.classes = rule.classes;
            r.dataStart = rule.dataStart;
            r.dataEnd = rule.dataEnd;
            if (actorCount != 0 || r.actors.length != 0) r.actors = rule.actors;
            if (tokenCount != 0 || r.tokens.length != 0) r.tokens = rule.tokens;
        }
        c.status = Status.Active;
        c.ruleCount = uint8(n);
        if (bySignature) c.lockedByPatient = false;
        emit ConsentPut(id, patient, bySignature);
    }

    function _deactivate(StoredConsent storage c) private {
        c.status = Status.Revoked;
        _patients[c.patient].active--;
    }

    /// Checks `patient`'s signature over `structHash` with `nonce`, then uses the nonce up.
    function _useSignature(bytes32 patient, uint256 nonce, bytes32 structHash, bytes calldata signature) private {
        PatientState storage p = _patients[patient];
        uint32 expected = p.nonce;
        if (nonce != expected) revert ConsentBadNonce(expected, nonce);
        address wallet = p.wallet;
        if (wallet == address(0)) revert ConsentNoWallet(patient);
        (address signer, ECDSA.RecoverError err, ) = ECDSA.tryRecoverCalldata(_hashTypedDataV4(structHash), signature);
        if (err != ECDSA.RecoverError.NoError || signer != wallet) revert ConsentBadSignature();
        p.nonce = expected + 1;
    }

    /// EIP-712 `hashStruct` of `Rule[]`: keccak256 of the concatenated rule hashes.
    function _hashRules(Rule[] calldata rules) private pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](rules.length);
        for (uint256 i = 0; i < rules.length; i++) hashes[i] = _hashRule(rules[i]);
        return keccak256(abi.encodePacked(hashes));
    }

    function _hashRule(Rule calldata r) private pure returns (bytes32) {
        return
            keccak256(
                bytes.concat(
                    abi.encode(
                        RULE_TYPEHASH,
                        r.parent,
                        r.permit,
                        keccak256(abi.encodePacked(r.actors)),
                        r.classes,
                        r.actions,
                        r.purposes
                    ),
                    abi.encode(r.start, r.end, r.dataStart, r.dataEnd, keccak256(abi.encodePacked(r.tokens)))
                )
            );
    }
}
